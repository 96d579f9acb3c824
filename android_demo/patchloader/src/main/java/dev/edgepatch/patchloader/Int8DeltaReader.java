package dev.edgepatch.patchloader;

import java.math.BigInteger;
import java.nio.IntBuffer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.regex.Pattern;

/**
 * The int8 delta rules of section "int8 delta" of the spec ({@code edgepatch/format/spec.rst}),
 * checked in its order with the Python reader's messages, on a file whose container is
 * already verified.
 */
final class Int8DeltaReader {
    static final String BASE_FORMAT = "tflite_int8";
    static final int ONE_BITS = 0x3F800000; // float32 1.0
    static final int SCALE_CODE_SHIFT = 16; // one scale code step: 2**16 in the float32 bit pattern
    static final int SCALE_CODE_LIMIT = (ONE_BITS >> SCALE_CODE_SHIFT) - 1; // keeps r positive and finite
    static final List<String> REFOLD_TENSORS = DeltaFormat.list("refold/codes", "refold/rice_k", "refold/bias_step");
    private static final Set<String> META_KEYS = new HashSet<String>(
            DeltaFormat.list("base_sha256", "quant", "task"));
    // The spec's exact names. (Python's re.match with '$' also takes a trailing newline; not copied.)
    private static final Pattern DATA_NAME = Pattern.compile("(data|at|put)/(0|[1-9][0-9]{0,8})");
    private static final String SCALE = "scale";
    private static final String ZERO_POINT = "zero_point";

    private Int8DeltaReader() {
    }

    static Int8Delta decode(TensorFile file, String source) throws EdgepatchException {
        Map<String, Object> meta = file.meta;
        Set<String> keys = new HashSet<String>(meta.keySet());
        keys.remove("refold");
        if (!keys.equals(META_KEYS)) {
            throw new HeaderException(source + ": int8 delta meta must have base_sha256, quant, task and optionally "
                    + "refold; got " + Text.list(sorted(meta.keySet())));
        }
        Delta.Task task = DeltaReader.task(meta.get("task"), file.version, source);
        String base = baseSha256(meta.get("base_sha256"), source);
        List<List<?>> quant = quant(meta.get("quant"), source);
        Map<String, TensorFile.Entry> stored = new LinkedHashMap<String, TensorFile.Entry>();
        for (TensorFile.Entry entry : file.entries) {
            stored.put(entry.name, entry);
        }
        List<String> names = new ArrayList<String>();
        for (String name : sorted(stored.keySet())) {
            if (!REFOLD_TENSORS.contains(name)) {
                names.add(name);
            }
        }
        checkNames(names, source);
        TensorFile.Entry scales = stored.get(SCALE);
        TensorFile.Entry zeroPoints = stored.get(ZERO_POINT);
        if (!DeltaFormat.FLOAT32.equals(scales.dtype) || !"int32".equals(zeroPoints.dtype) || scales.shape.length != 1
                || zeroPoints.shape.length != 1) {
            throw new HeaderException(source + ": scale must be float32 [N] and zero_point int32 [M]");
        }
        List<Int8Delta.Quant> entries = quantEntries(quant, scales.shape[0], zeroPoints.shape[0], source);
        int[] scaleBits = ints(file, scales);
        int[] zeroPointValues = ints(file, zeroPoints);
        Int8Limits.checkQuantValues(entries, scaleBits, zeroPointValues, source);
        Map<Integer, byte[]> data = new LinkedHashMap<Integer, byte[]>();
        Map<Integer, TensorFile.Entry[]> edited = new LinkedHashMap<Integer, TensorFile.Entry[]>();
        for (String name : names) {
            if (!SCALE.equals(name) && !ZERO_POINT.equals(name)) {
                checkDataTensor(name, stored, names, data, edited, file, source);
            }
        }
        List<Integer> both = new ArrayList<Integer>();
        for (Integer index : data.keySet()) {
            if (edited.containsKey(index)) {
                both.add(index);
            }
        }
        if (!both.isEmpty()) {
            Collections.sort(both);
            throw new HeaderException(source + ": tensors " + Text.list(both.subList(0, Math.min(3, both.size())))
                    + " have both data and edits");
        }
        Map<Integer, Int8Delta.Edit> edits = new LinkedHashMap<Integer, Int8Delta.Edit>();
        for (Map.Entry<Integer, TensorFile.Entry[]> edit : edited.entrySet()) {
            TensorFile.Entry[] atPut = edit.getValue();
            edits.put(edit.getKey(), new Int8Delta.Edit(ints(file, atPut[0]), bytes(file, atPut[1])));
        }
        List<Int8Delta.Refold> refolds = refolds(file, stored, source);
        Set<Long> rescaled = new HashSet<Long>();
        for (Int8Delta.Quant entry : entries) {
            if (entry.scales != 0) {
                rescaled.add(entry.index);
            }
        }
        for (Int8Delta.Refold refold : refolds) {
            if (rescaled.contains(refold.weight) || rescaled.contains(refold.bias) || isKey(data, refold.bias)
                    || isKey(edits, refold.bias)) {
                throw new HeaderException(source + ": refold of tensors " + refold.weight + "/" + refold.bias
                        + " also in quant scales or bias data");
            }
        }
        return new Int8Delta(task, base, Collections.unmodifiableList(entries), scaleBits,
                zeroPointValues, Collections.unmodifiableMap(data), Collections.unmodifiableMap(edits),
                Collections.unmodifiableList(refolds));
    }

    private static List<String> sorted(Set<String> names) {
        List<String> out = new ArrayList<String>(names);
        Collections.sort(out, HeaderRules.BY_CODE_POINT);
        return out;
    }

    private static boolean isKey(Map<Integer, ?> map, long index) {
        return index <= Integer.MAX_VALUE && map.containsKey((int) index);
    }

    /** The spec's index or count: a non-negative integer of any size, not a boolean. */
    private static boolean isIndex(Object value) {
        return value instanceof Long && ((Long) value).longValue() >= 0
                || value instanceof BigInteger && ((BigInteger) value).signum() >= 0;
    }

    private static BigInteger big(Object value) {
        return value instanceof Long ? BigInteger.valueOf(((Long) value).longValue()) : (BigInteger) value;
    }

    /** An index as a long; one past 2**63 - 1 fits no base, so Long.MAX_VALUE stands for it. */
    private static long clamped(Object value) {
        return value instanceof Long ? ((Long) value).longValue() : Long.MAX_VALUE;
    }

    /** True when {@code value} is an array of arrays of {@code width} indices each. */
    private static boolean indexLists(Object value, int width) {
        if (!(value instanceof List)) {
            return false;
        }
        for (Object item : (List<?>) value) {
            if (!(item instanceof List) || ((List<?>) item).size() != width) {
                return false;
            }
            for (Object number : (List<?>) item) {
                if (!isIndex(number)) {
                    return false;
                }
            }
        }
        return true;
    }

    private static boolean ascending(List<List<?>> items) {
        for (int i = 1; i < items.size(); i++) {
            if (big(items.get(i - 1).get(0)).compareTo(big(items.get(i).get(0))) >= 0) {
                return false;
            }
        }
        return true;
    }

    private static String baseSha256(Object value, String source) throws HeaderException {
        if (!(value instanceof Map) || ((Map<?, ?>) value).size() != 1
                || !HeaderRules.isSha256Hex(((Map<?, ?>) value).get(BASE_FORMAT))) {
            throw new HeaderException(source + ": base_sha256 must be {'" + BASE_FORMAT + "': <64 lowercase hex>}");
        }
        return (String) ((Map<?, ?>) value).get(BASE_FORMAT);
    }

    @SuppressWarnings("unchecked")
    private static List<List<?>> quant(Object value, String source) throws HeaderException {
        if (!indexLists(value, 3)) {
            throw new HeaderException(source + ": quant must be an array of [tensor_index, scale_count, "
                    + "zero_point_count]");
        }
        List<List<?>> quant = (List<List<?>>) value;
        if (!ascending(quant)) {
            throw new HeaderException(source + ": quant tensor indices must be ascending and unique");
        }
        return quant;
    }

    private static void checkNames(List<String> names, String source) throws HeaderException {
        boolean ok = names.contains(SCALE) && names.contains(ZERO_POINT);
        for (String name : names) {
            ok &= SCALE.equals(name) || ZERO_POINT.equals(name) || DATA_NAME.matcher(name).matches();
        }
        if (!ok) {
            throw new HeaderException(source + ": int8 delta tensors must be scale, zero_point and data/<index>; got "
                    + Text.list(names.subList(0, Math.min(5, names.size()))));
        }
    }

    private static List<Int8Delta.Quant> quantEntries(List<List<?>> quant, long scales, long zeroPoints,
            String source) throws HeaderException {
        BigInteger scaleSum = BigInteger.ZERO;
        BigInteger zeroSum = BigInteger.ZERO;
        for (List<?> entry : quant) {
            scaleSum = scaleSum.add(big(entry.get(1)));
            zeroSum = zeroSum.add(big(entry.get(2)));
        }
        if (!scaleSum.equals(BigInteger.valueOf(scales)) || !zeroSum.equals(BigInteger.valueOf(zeroPoints))) {
            throw new HeaderException(source + ": quant counts sum to " + scaleSum + " scales and " + zeroSum
                    + " zero points, but the file holds " + scales + " and " + zeroPoints);
        }
        List<Int8Delta.Quant> entries = new ArrayList<Int8Delta.Quant>(quant.size());
        for (List<?> entry : quant) { // each count <= its sum, a tensor length: an int
            entries.add(new Int8Delta.Quant(clamped(entry.get(0)), (int) clamped(entry.get(1)),
                    (int) clamped(entry.get(2))));
        }
        return entries;
    }

    /** One data/N, at/N or put/N tensor, in sorted-name order as Python visits them. */
    private static void checkDataTensor(String name, Map<String, TensorFile.Entry> stored, List<String> names,
            Map<Integer, byte[]> data, Map<Integer, TensorFile.Entry[]> edited, TensorFile file, String source)
            throws HeaderException {
        int slash = name.indexOf('/');
        String role = name.substring(0, slash);
        String index = name.substring(slash + 1);
        TensorFile.Entry raw = stored.get(name);
        String expected = "at".equals(role) ? "int32" : "uint8";
        if (!expected.equals(raw.dtype) || raw.shape.length != 1) {
            throw new HeaderException(source + ": tensor '" + name + "' must be " + expected + " [n]");
        }
        if ("data".equals(role)) {
            data.put(Integer.valueOf(index), bytes(file, raw));
        } else if ("at".equals(role)) {
            TensorFile.Entry put = stored.get("put/" + index);
            if (put == null || !Arrays.equals(put.shape, raw.shape) || !ascendingPositions(ints(file, raw))) {
                throw new HeaderException(source + ": '" + name + "' needs a 'put/" + index
                        + "' of equal length and ascending positions");
            }
            edited.put(Integer.valueOf(index), new TensorFile.Entry[] {raw, put}); // put's own check comes later
        } else if (!names.contains("at/" + index)) {
            throw new HeaderException(source + ": '" + name + "' has no 'at/" + index + "'");
        }
    }

    /** Non-negative and strictly ascending (compared as ints: never wraps, unlike an int32 np.diff). */
    private static boolean ascendingPositions(int[] at) {
        for (int k = 0; k < at.length; k++) {
            if (k == 0 ? at[0] < 0 : at[k] <= at[k - 1]) {
                return false;
            }
        }
        return true;
    }

    @SuppressWarnings("unchecked")
    private static List<Int8Delta.Refold> refolds(TensorFile file, Map<String, TensorFile.Entry> stored, String source)
            throws EdgepatchException {
        Object value = file.meta.get("refold");
        List<String> present = new ArrayList<String>();
        for (String name : REFOLD_TENSORS) {
            if (stored.containsKey(name)) {
                present.add(name);
            }
        }
        if (value == null || value == Json.NULL) {
            if (!present.isEmpty()) {
                throw new HeaderException(source + ": tensors " + Text.list(present)
                        + " need a 'refold' entry in meta");
            }
            return Collections.emptyList();
        }
        boolean valid = indexLists(value, 4) && !((List<?>) value).isEmpty();
        for (int i = 0; valid && i < ((List<?>) value).size(); i++) {
            valid = big(((List<?>) ((List<?>) value).get(i)).get(3)).signum() > 0;
        }
        if (!valid) {
            throw new HeaderException(source + ": refold must be a non-empty array of [weight_index, bias_index, "
                    + "input_index, channels] with channels > 0");
        }
        List<List<?>> entries = (List<List<?>>) value;
        Set<BigInteger> biases = new HashSet<BigInteger>();
        for (List<?> entry : entries) {
            biases.add(big(entry.get(1)));
        }
        if (!ascending(entries) || biases.size() != entries.size()) {
            throw new HeaderException(source + ": refold weight indices must be ascending and unique, bias indices "
                    + "unique");
        }
        if (!present.equals(REFOLD_TENSORS)) {
            throw new HeaderException(source + ": refold needs tensors " + Text.list(REFOLD_TENSORS) + "; got "
                    + Text.list(present));
        }
        TensorFile.Entry packed = stored.get(REFOLD_TENSORS.get(0));
        TensorFile.Entry ks = stored.get(REFOLD_TENSORS.get(1));
        TensorFile.Entry steps = stored.get(REFOLD_TENSORS.get(2));
        int count = entries.size();
        if (!"uint8".equals(packed.dtype) || packed.shape.length != 1 || !"uint8".equals(ks.dtype)
                || !Arrays.equals(ks.shape, new long[] {count, 2}) || !DeltaFormat.FLOAT32.equals(steps.dtype)
                || !Arrays.equals(steps.shape, new long[] {count})) {
            throw new HeaderException(source + ": refold/codes must be uint8 [n], refold/rice_k uint8 [" + count
                    + ", 2] and refold/bias_step float32 [" + count + "]");
        }
        float[] step = file.floats(steps);
        for (float s : step) {
            if (!(s > 0) || Float.isInfinite(s)) {
                throw new NonFiniteException(source + ": refold/bias_step must be finite and > 0");
            }
        }
        short[] codes = codes(entries, bytes(file, packed), bytes(file, ks), source);
        List<Int8Delta.Refold> refolds = new ArrayList<Int8Delta.Refold>(count);
        int at = 0;
        for (int i = 0; i < count; i++) {
            List<?> entry = entries.get(i);
            int channels = (int) clamped(entry.get(3)); // the codes decoded, so it fits
            refolds.add(new Int8Delta.Refold(clamped(entry.get(0)), clamped(entry.get(1)), clamped(entry.get(2)),
                    Arrays.copyOfRange(codes, at, at + channels), Arrays.copyOfRange(codes, at + channels,
                    at + 2 * channels), step[i]));
            at += 2 * channels;
        }
        return refolds;
    }

    /** Every entry's scale codes then its bias codes, decoded; scale codes checked against the limit. */
    private static short[] codes(List<List<?>> entries, byte[] packed, byte[] ks, String source)
            throws HeaderException {
        List<BigInteger> counts = new ArrayList<BigInteger>(2 * entries.size());
        for (List<?> entry : entries) {
            counts.add(big(entry.get(3)));
            counts.add(big(entry.get(3)));
        }
        int[] parameters = new int[ks.length];
        for (int i = 0; i < ks.length; i++) {
            parameters[i] = ks[i] & 0xff;
        }
        short[] codes;
        try {
            codes = Rice.decode(packed, counts, parameters);
        } catch (Rice.RiceException error) {
            throw new HeaderException(source + ": refold/codes: " + error.getMessage());
        }
        int at = 0;
        for (List<?> entry : entries) {
            int channels = (int) clamped(entry.get(3));
            for (int c = at; c < at + channels; c++) {
                if (Math.abs(codes[c]) > SCALE_CODE_LIMIT) {
                    throw new HeaderException(source + ": refold scale codes must be within +-" + SCALE_CODE_LIMIT);
                }
            }
            at += 2 * channels;
        }
        return codes;
    }

    private static byte[] bytes(TensorFile file, TensorFile.Entry entry) {
        byte[] out = new byte[entry.nbytes];
        file.bytes(entry).get(out);
        return out;
    }

    /** An int32 tensor's values (read as raw bits: a float32 tensor too). */
    private static int[] ints(TensorFile file, TensorFile.Entry entry) {
        IntBuffer values = file.bytes(entry).asIntBuffer();
        int[] out = new int[values.remaining()];
        values.get(out);
        return out;
    }
}
