package dev.edgepatch.patchloader;

import java.io.File;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;

/**
 * A shared {@code .tflite} base, read and indexed once; {@link #apply(TaskDelta)} gives a
 * task's model bytes, ready for LiteRT's {@code Interpreter(ByteBuffer)}. The base is float
 * or int8 (every conv kernel int8), told apart by content (section "Bases" of the spec,
 * {@code edgepatch/format/spec.rst}); a float base takes a float {@link Delta}, an int8 base an
 * {@link Int8Delta}.
 *
 * <pre>{@code
 * // once, at start-up: map the base (an uncompressed asset or a file) and index it
 * TfliteBase base = TfliteBase.load(mappedBase, "base.tflite");  // sha256 + site index
 *
 * // per task switch
 * Delta delta = Delta.decode(deltaBytes, "flowers.delta");       // verified
 * ByteBuffer model = base.apply(delta);                          // new direct buffer
 * Interpreter interpreter = new Interpreter(model);              // keep `model` alive with it
 *
 * // WRONG: reusing a buffer that a live interpreter still reads
 * base.applyInto(otherDelta, model);  // the first interpreter now runs with other weights
 * }</pre>
 *
 * <p>Lifetime: the base keeps a reference to the buffer it was loaded from and only reads
 * it; do not change those bytes while the base is in use. {@code apply} writes into a new
 * direct buffer; {@code applyInto} overwrites a buffer you pass, which must not be in use
 * by an interpreter (LiteRT reads weights from it for the interpreter's whole life).
 *
 * <p>The result is the patched model the spec's sections "Applying a float delta" and
 * "Applying an int8 delta" define, byte for byte (the golden tests compare it with the
 * Python runtime's): a re-folded scale is the float32 product {@code base_kernel * scale}
 * per output channel, kernels are converted from the canonical layout, and the dense head
 * is zero-padded to the base's head width.
 *
 * <p>A TfliteBase is immutable and safe to use from several threads.
 */
public final class TfliteBase {
    /** Largest base this loader reads: a Java buffer's limit. */
    public static final int MAX_BASE_BYTES = Integer.MAX_VALUE - 8;
    private static final String FORMAT = "tflite";

    private final ByteBuffer data;
    private final String source;
    private final String sha256;
    private final TfliteModel int8Model; // null for a float base
    private final Map<String, TfliteSites.Site> sites; // empty for an int8 base
    private final int headWidth;
    private final int largestKernel;
    private final Map<String, double[]> peaks;

    private TfliteBase(ByteBuffer data, String source, String sha256, TfliteModel int8Model,
            Map<String, TfliteSites.Site> sites) {
        this.data = data;
        this.source = source;
        this.sha256 = sha256;
        this.int8Model = int8Model;
        this.sites = sites;
        this.headWidth = SiteUpdates.headWidth(sites);
        int largest = 0;
        for (TfliteSites.Site site : sites.values()) {
            largest = Math.max(largest, site.kernel.count);
        }
        this.largestKernel = largest;
        this.peaks = SiteUpdates.kernelPeaks(data, sites);
    }

    /**
     * Reads and indexes a base held in memory: the bytes between {@code model}'s position
     * and limit, which the base keeps reading (not copied). A {@code MappedByteBuffer} of an
     * uncompressed asset or of a file is the usual argument.
     *
     * @param source the base's name for messages, usually its path
     * @throws BaseModelException the bytes are not a TFLite model written by {@code edgepatch convert}
     */
    public static TfliteBase load(ByteBuffer model, String source) throws BaseModelException {
        ByteBuffer data = model.slice().order(ByteOrder.LITTLE_ENDIAN);
        MessageDigest digest = TensorFileReader.sha256();
        digest.update(data.duplicate());
        String sha256 = Text.hex(digest.digest());
        TfliteModel parsed = TfliteModel.parse(data, source);
        ByteBuffer kept = data.asReadOnlyBuffer().order(ByteOrder.LITTLE_ENDIAN);
        if (parsed.isInt8()) {
            return new TfliteBase(kept, source, sha256, parsed, Collections.<String, TfliteSites.Site>emptyMap());
        }
        return new TfliteBase(kept, source, sha256, null, TfliteSites.index(parsed, source));
    }

    /** {@link #load(ByteBuffer, String)} for a byte array (kept, not copied). */
    public static TfliteBase load(byte[] model, String source) throws BaseModelException {
        return load(ByteBuffer.wrap(model), source);
    }

    /**
     * Reads a base file into memory and indexes it.
     *
     * @throws MissingFileException the path does not exist or is not a regular file
     * @throws BaseModelException as {@link #load(ByteBuffer, String)}, or the file is too large
     * @throws IOException reading the file failed
     */
    public static TfliteBase load(File file) throws EdgepatchException, IOException {
        byte[] bytes = FileBytes.read(file, MAX_BASE_BYTES, new FileBytes.SizeCheck() {
            @Override
            public void check(long size, String path) throws EdgepatchException {
                if (size > MAX_BASE_BYTES) {
                    throw new BaseModelException(path + ": file is " + size + " bytes, larger than this loader reads ("
                            + MAX_BASE_BYTES + ")");
                }
            }
        });
        if (bytes.length > MAX_BASE_BYTES) {
            throw new BaseModelException(file.getPath() + ": file grew past " + MAX_BASE_BYTES + " bytes while read");
        }
        return load(bytes, file.getPath());
    }

    /**
     * Lowercase hex SHA-256 of the base bytes: what a delta's {@code base_sha256["tflite"]}
     * (an int8 delta's {@code ["tflite_int8"]}) must be.
     */
    public String sha256() {
        return sha256;
    }

    /** True for a full-integer base (every conv kernel int8), which takes {@link Int8Delta}s. */
    public boolean isInt8() {
        return int8Model != null;
    }

    /** The base file's size in bytes; the size of every buffer {@code apply} returns. */
    public int size() {
        return data.limit();
    }

    /** The base's site names, in op order (unmodifiable); none for an int8 base, which is patched by tensor index. */
    public List<String> siteNames() {
        return Collections.unmodifiableList(new ArrayList<String>(sites.keySet()));
    }

    /** Where site {@code name}'s kernel and bias lie in the base bytes; null if the base lacks it. */
    TfliteSites.Site site(String name) {
        return sites.get(name);
    }

    /**
     * Checks that {@code delta} was made for this base and fits it (kind, fingerprint, site
     * names, ops and shapes; for an int8 delta, every tensor index, count and size, and the
     * recomputed scales), without changing anything: an int8 delta is applied to a scratch copy.
     *
     * @throws WrongBaseException the delta is of the other kind (float or int8), has no
     *     fingerprint for this format, or was made for other bytes
     * @throws ShapeMismatchException a delta site or tensor is missing here or does not fit
     * @throws NonFiniteException an int8 delta's recomputed scale is not finite and > 0
     */
    public void check(TaskDelta delta) throws EdgepatchException {
        if (delta instanceof Int8Delta) {
            writeInt8(int8(delta), ByteBuffer.allocate(size()));
        } else {
            updates(delta);
        }
    }

    /**
     * The base bytes with {@code delta} applied, in a new direct buffer of native byte order
     * (position 0, limit {@link #size()}), ready for {@code new Interpreter(buffer)}.
     *
     * @throws WrongBaseException the delta is of the other kind (float or int8) or was made for another base
     * @throws ShapeMismatchException a delta tensor does not fit its site (or, int8, its base tensor)
     * @throws NonFiniteException an int8 delta's recomputed scale is not finite and > 0
     * @throws BaseModelException an int8 delta writes a tensor this base cannot patch alone
     */
    public ByteBuffer apply(TaskDelta delta) throws EdgepatchException {
        if (delta instanceof Int8Delta) {
            return writeInt8(int8(delta), ByteBuffer.allocateDirect(size()));
        }
        List<SiteUpdates.Update> updates = updates(delta); // everything is checked before the copy
        ByteBuffer out = ByteBuffer.allocateDirect(size());
        return write(updates, out);
    }

    /**
     * As {@link #apply(TaskDelta)}, into {@code target}: a direct buffer of at least {@link #size()}
     * bytes that no interpreter uses now. Returns it with position 0 and limit {@code size()}.
     * Saves the allocation on repeated swaps; the whole base is still copied in. A float delta
     * is checked before anything is written; an int8 delta is checked as it is written (in the
     * spec's order), so after its exception the target holds a partly patched copy.
     *
     * @throws IllegalArgumentException {@code target} is too small or read-only
     */
    public ByteBuffer applyInto(TaskDelta delta, ByteBuffer target) throws EdgepatchException {
        if (target.capacity() < size() || target.isReadOnly()) {
            throw new IllegalArgumentException("target must be a writable buffer of at least " + size()
                    + " bytes; received capacity " + target.capacity() + (target.isReadOnly() ? ", read-only" : ""));
        }
        if (delta instanceof Int8Delta) {
            return writeInt8(int8(delta), target);
        }
        List<SiteUpdates.Update> updates = updates(delta);
        return write(updates, target);
    }

    private List<SiteUpdates.Update> updates(TaskDelta task) throws EdgepatchException {
        if (isInt8()) {
            throw new WrongBaseException("float delta for task '" + task.task().name() + "' needs a float base; "
                    + source + " is an int8 base (it takes int8 deltas)");
        }
        Delta delta = (Delta) task; // Delta and Int8Delta are the only TaskDeltas
        checkFingerprint(delta);
        return SiteUpdates.compute(sites, peaks, headWidth, delta, source);
    }

    /** The int8 delta, once it is known to be for this base (kind, then fingerprint, as Python checks it). */
    private Int8Delta int8(TaskDelta task) throws WrongBaseException {
        Int8Delta delta = (Int8Delta) task;
        if (!isInt8()) {
            throw new WrongBaseException("int8 delta for task '" + delta.task().name() + "' needs an int8 base; "
                    + source + " is a float base (it takes float deltas)");
        }
        if (!delta.baseSha256().equals(sha256)) {
            throw new WrongBaseException("int8 delta for task '" + delta.task().name() + "' was made for base sha256 "
                    + delta.baseSha256().substring(0, 16) + "\u2026, but " + source + " has sha256 "
                    + sha256.substring(0, 16) + "\u2026");
        }
        return delta;
    }

    private ByteBuffer writeInt8(Int8Delta delta, ByteBuffer target) throws EdgepatchException {
        ByteBuffer out = target.duplicate().order(ByteOrder.LITTLE_ENDIAN);
        out.clear();
        out.put(data.duplicate());
        Int8Patcher.patch(int8Model, data, out, delta, source);
        return result(target);
    }

    private ByteBuffer result(ByteBuffer target) {
        ByteBuffer result = target.duplicate().order(ByteOrder.nativeOrder());
        result.position(0);
        result.limit(size());
        return result;
    }

    private void checkFingerprint(Delta delta) throws WrongBaseException {
        String expected = delta.baseSha256().get(FORMAT);
        if (expected == null) {
            List<String> formats = new ArrayList<String>(delta.baseSha256().keySet());
            Collections.sort(formats);
            StringBuilder made = new StringBuilder();
            for (String format : formats) {
                made.append(made.length() == 0 ? "" : ", ").append(format);
            }
            throw new WrongBaseException("delta for task '" + delta.task().name() + "' has no " + FORMAT
                    + " base fingerprint (it was made for: " + made + "); cannot apply to " + source);
        }
        if (!expected.equals(sha256)) {
            throw new WrongBaseException("delta for task '" + delta.task().name() + "' was made for " + FORMAT
                    + " base sha256 " + expected.substring(0, 16) + "\u2026, but " + source + " has sha256 "
                    + sha256.substring(0, 16) + "\u2026");
        }
    }

    private ByteBuffer write(List<SiteUpdates.Update> updates, ByteBuffer target) {
        ByteBuffer out = target.duplicate().order(ByteOrder.LITTLE_ENDIAN);
        out.clear();
        out.put(data.duplicate());
        float[] scratch = null;
        for (SiteUpdates.Update update : updates) {
            TfliteSites.Slot kernel = update.slots.kernel;
            if (update.kernel != null) {
                floats(out, kernel).put(update.kernel);
            } else if (update.scale != null) {
                if (scratch == null) {
                    scratch = new float[largestKernel];
                }
                floats(data, kernel).get(scratch, 0, kernel.count);
                refold(scratch, kernel, update.scale, SiteUpdates.outAxis(update.slots.op));
                floats(out, kernel).put(scratch, 0, kernel.count);
            }
            if (update.bias != null) {
                floats(out, update.slots.bias).put(update.bias);
            }
        }
        return result(target);
    }

    /** kernel[..., c, ...] *= scale[c] along {@code axis}, in float32 (numpy's np.multiply). */
    private static void refold(float[] values, TfliteSites.Slot kernel, float[] scale, int axis) {
        int channels = kernel.shape[axis];
        int inner = 1;
        for (int i = axis + 1; i < kernel.shape.length; i++) {
            inner *= kernel.shape[i];
        }
        int outer = channels == 0 || inner == 0 ? 0 : kernel.count / (channels * inner);
        int at = 0;
        for (int o = 0; o < outer; o++) {
            for (int c = 0; c < channels; c++) {
                float s = scale[c];
                for (int end = at + inner; at < end; at++) {
                    values[at] = values[at] * s;
                }
            }
        }
    }

    /** A little-endian float view of one tensor's bytes in {@code buffer}. */
    static FloatBuffer floats(ByteBuffer buffer, TfliteSites.Slot slot) {
        ByteBuffer view = buffer.duplicate();
        view.limit(slot.offset + 4 * slot.count);
        view.position(slot.offset);
        return view.slice().order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer();
    }
}
