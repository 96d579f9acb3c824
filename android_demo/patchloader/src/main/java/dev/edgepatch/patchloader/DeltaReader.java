package dev.edgepatch.patchloader;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * Step 11 of the verification order for {@code "delta"} files, the delta rules (meta, then
 * the stored tensors), and the unpacking of the packed {@code scale}/{@code bias} vectors into
 * per-site values: section "Float delta" of the spec ({@code edgepatch/format/spec.rst}).
 */
final class DeltaReader {
    /** One validated meta.sites entry. */
    static final class SiteEntry {
        final String name;
        final String op;
        final long channels;
        final String roles;

        SiteEntry(String name, String op, long channels, String roles) {
            this.name = name;
            this.op = op;
            this.channels = channels;
            this.roles = roles;
        }

        boolean holds(String role) {
            return Arrays.asList(roles.split("\\+")).contains(role);
        }
    }

    private DeltaReader() {
    }

    static Delta decode(TensorFile file, String source) throws EdgepatchException {
        Map<String, Object> meta = HeaderRules.checkKeys(file.meta, DeltaFormat.META_KEYS, "meta", source);
        Delta.Task task = task(meta.get("task"), file.version, source);
        List<String> kinds = HeaderRules.stringList(meta.get("kinds"), "meta.kinds", source);
        Map<String, String> base = baseSha256(meta.get("base_sha256"), source);
        List<SiteEntry> sites = sites(meta.get("sites"), source);
        Map<String, TensorFile.Entry> stored = checkStoredTensors(sites, file.entries, source);
        DeltaLimits.checkHead(task.classes(), sites, source);
        DeltaLimits.checkSiteScales(sites, stored.containsKey(TensorNames.SCALE)
                ? file.floats(stored.get(TensorNames.SCALE)) : null, source);
        return new Delta(task, kinds, base, unpack(sites, stored, file));
    }

    static Delta.Task task(Object value, int version, String source) throws HeaderException {
        Map<String, Object> task = HeaderRules.checkKeys(value, DeltaFormat.TASK_KEYS, "meta.task", source);
        Object name = task.get("name");
        if (!HeaderRules.isText(name)) {
            throw new HeaderException(source + ": meta.task.name must be a non-empty string, got " + Text.show(name));
        }
        List<String> classes = HeaderRules.stringList(task.get("classes"), "meta.task.classes", source);
        Object resolution = task.get("resolution");
        if (!HeaderRules.isInt(resolution, DeltaFormat.MIN_RESOLUTION, DeltaFormat.MAX_RESOLUTION)) {
            throw new HeaderException(source + ": meta.task.resolution must be an integer in "
                    + DeltaFormat.MIN_RESOLUTION + ".." + DeltaFormat.MAX_RESOLUTION + ", got " + Text.show(resolution));
        }
        int size = (int) ((Long) resolution).longValue();
        Object pre = task.get("preprocessing");
        if (version == 1) { // one scalar scale and offset, RGB
            Map<String, Object> v1 = HeaderRules.checkKeys(pre, DeltaFormat.V1_PREPROCESSING_KEYS,
                    "meta.task.preprocessing", source);
            double scale = bounded(v1.get("scale"), "meta.task.preprocessing.scale", true, source);
            double offset = bounded(v1.get("offset"), "meta.task.preprocessing.offset", false, source);
            return new Delta.Task((String) name, classes, size, "rgb", new double[] {scale, scale, scale},
                    new double[] {offset, offset, offset}, DeltaFormat.RESIZE_FILTERS.get(0));
        }
        Object resize = DeltaFormat.RESIZE_FILTERS.get(0); // the optional key; absent means "bilinear"
        if (pre instanceof Map && ((Map<?, ?>) pre).containsKey(DeltaFormat.RESIZE_KEY)) {
            Map<Object, Object> rest = new LinkedHashMap<Object, Object>((Map<?, ?>) pre);
            resize = rest.remove(DeltaFormat.RESIZE_KEY);
            pre = rest;
        }
        Map<String, Object> fields = HeaderRules.checkKeys(pre, DeltaFormat.PREPROCESSING_KEYS,
                "meta.task.preprocessing", source);
        Object channels = fields.get("channels");
        if (!DeltaFormat.CHANNEL_ORDERS.contains(channels)) {
            throw new HeaderException(source + ": meta.task.preprocessing.channels must be one of 'rgb', 'bgr', got "
                    + Text.show(channels));
        }
        if (!DeltaFormat.RESIZE_FILTERS.contains(resize)) {
            throw new HeaderException(source + ": meta.task.preprocessing.resize must be one of 'bilinear', got "
                    + Text.show(resize));
        }
        double[] scale = perChannel(fields.get("scale"), "scale", source);
        double[] offset = perChannel(fields.get("offset"), "offset", source);
        return new Delta.Task((String) name, classes, size, (String) channels, scale, offset, (String) resize);
    }

    /** A finite number within the preprocessing bounds (scale: 1e-30 <= |scale| <= 1e6; offset: |offset| <= 1e6). */
    private static double bounded(Object value, String where, boolean isScale, String source) throws HeaderException {
        double number = HeaderRules.finiteNumber(value, where, source);
        double size = Math.abs(number);
        if (isScale && !(size >= DeltaFormat.MIN_ABS_SCALE && size <= DeltaFormat.MAX_ABS_PREPROCESSING)) {
            throw new HeaderException(source + ": " + where + " must have 1e-30 <= |scale| <= 1e6, got "
                    + Text.show(value));
        }
        if (!isScale && size > DeltaFormat.MAX_ABS_PREPROCESSING) {
            throw new HeaderException(source + ": " + where + " must have |offset| <= 1e6, got " + Text.show(value));
        }
        return number;
    }

    private static double[] perChannel(Object value, String field, String source) throws HeaderException {
        String where = "meta.task.preprocessing." + field;
        if (!(value instanceof List) || ((List<?>) value).size() != 3) {
            throw new HeaderException(source + ": " + where + " must be an array of 3 numbers, got " + Text.show(value));
        }
        double[] out = new double[3];
        for (int c = 0; c < 3; c++) {
            out[c] = bounded(((List<?>) value).get(c), where + "[" + c + "]", "scale".equals(field), source);
        }
        return out;
    }

    private static Map<String, String> baseSha256(Object value, String source) throws HeaderException {
        String where = "meta.base_sha256";
        if (!(value instanceof Map) || ((Map<?, ?>) value).isEmpty()) {
            throw new HeaderException(source + ": " + where + " must be a non-empty JSON object, got " + Text.show(value));
        }
        Map<String, String> result = new LinkedHashMap<String, String>();
        for (Map.Entry<?, ?> item : ((Map<?, ?>) value).entrySet()) {
            String key = (String) item.getKey();
            if (!HeaderRules.isText(key)) {
                throw new HeaderException(source + ": " + where + " keys must be non-empty strings, got "
                        + Text.show(key));
            }
            if (!HeaderRules.isSha256Hex(item.getValue())) {
                throw new HeaderException(source + ": " + where + "[" + Text.quote(key)
                        + "] must be 64 lowercase hex digits, got " + Text.show(item.getValue()));
            }
            result.put(key, (String) item.getValue());
        }
        return Collections.unmodifiableMap(result);
    }

    private static List<SiteEntry> sites(Object value, String source) throws HeaderException {
        if (!(value instanceof List) || ((List<?>) value).isEmpty() || ((List<?>) value).size() > DeltaFormat.MAX_SITES) {
            String got = value instanceof List ? ((List<?>) value).size() + " entries" : Text.show(value);
            throw new HeaderException(source + ": meta.sites must be an array of 1.." + DeltaFormat.MAX_SITES
                    + " entries, got " + got);
        }
        List<SiteEntry> sites = new ArrayList<SiteEntry>();
        Set<String> seen = new HashSet<String>();
        List<?> items = (List<?>) value;
        for (int index = 0; index < items.size(); index++) {
            sites.add(site(items.get(index), index, seen, source));
        }
        return sites;
    }

    private static SiteEntry site(Object item, int index, Set<String> seen, String source) throws HeaderException {
        String where = "meta.sites[" + index + "]";
        if (!(item instanceof List) || ((List<?>) item).size() != 4) {
            throw new HeaderException(source + ": " + where + " must be an array [name, op, channels, roles], got "
                    + Text.show(item));
        }
        List<?> fields = (List<?>) item;
        Object name = fields.get(0);
        if (!HeaderRules.isName(name, TensorNames.MAX_SITE_NAME_BYTES)) {
            throw new HeaderException(source + ": " + where + ": name must be a string of 1.."
                    + TensorNames.MAX_SITE_NAME_BYTES + " UTF-8 bytes, got " + Text.show(name));
        }
        if (!seen.add((String) name)) {
            throw new HeaderException(source + ": " + where + ": duplicate site name " + Text.quote((String) name));
        }
        where = where + " (" + Text.show(name) + ")";
        if (!DeltaFormat.SITE_OPS.contains(fields.get(1))) {
            throw new HeaderException(source + ": " + where + ": op must be one of conv, depthwise, dense, got "
                    + Text.show(fields.get(1)));
        }
        if (!HeaderRules.isInt(fields.get(2), 1, DeltaFormat.MAX_FILE_BYTES)) {
            throw new HeaderException(source + ": " + where + ": channels must be an integer in 1.."
                    + DeltaFormat.MAX_FILE_BYTES + ", got " + Text.show(fields.get(2)));
        }
        if (!DeltaFormat.ROLE_SETS.contains(fields.get(3))) {
            throw new HeaderException(source + ": " + where + ": roles must be one of 'scale', 'bias', "
                    + "'scale+bias', 'kernel', 'kernel+bias' (a kernel takes no scale), got " + Text.show(fields.get(3)));
        }
        return new SiteEntry((String) name, (String) fields.get(1), ((Long) fields.get(2)).longValue(),
                (String) fields.get(3));
    }

    /** E: the tensor names a delta with these sites stores, in file order, each with the sites it serves. */
    private static Map<String, List<SiteEntry>> expectedNames(List<SiteEntry> sites) {
        Map<String, List<SiteEntry>> names = new LinkedHashMap<String, List<SiteEntry>>();
        for (String role : new String[] {TensorNames.SCALE, TensorNames.BIAS}) {
            List<SiteEntry> holders = new ArrayList<SiteEntry>();
            for (SiteEntry site : sites) {
                if (site.holds(role)) {
                    holders.add(site);
                }
            }
            if (!holders.isEmpty()) {
                names.put(role, holders);
            }
        }
        for (SiteEntry site : sites) {
            if (site.holds(TensorNames.KERNEL)) {
                names.put(TensorNames.of(site.name, TensorNames.KERNEL), Collections.singletonList(site));
            }
        }
        return names;
    }

    private static long kernelOutputs(String op, long[] shape) {
        return "depthwise".equals(op) ? shape[2] * shape[3] : shape[shape.length - 1];
    }

    private static Map<String, TensorFile.Entry> checkStoredTensors(List<SiteEntry> sites, List<TensorFile.Entry> entries,
            String source) throws EdgepatchException {
        Map<String, List<SiteEntry>> expected = expectedNames(sites);
        Map<String, TensorFile.Entry> stored = new LinkedHashMap<String, TensorFile.Entry>();
        for (TensorFile.Entry entry : entries) {
            if (!DeltaFormat.isFloat(entry.dtype)) {
                throw new HeaderException(source + ": tensor " + Text.show(entry.name)
                        + ": delta tensors must be float32 or float16, got " + entry.dtype);
            }
            List<SiteEntry> holders = expected.get(entry.name);
            if (holders == null) {
                throw new HeaderException(source + ": tensor " + Text.show(entry.name)
                        + " does not belong in a delta: expected one of " + Text.show(new ArrayList<String>(expected.keySet()))
                        + " ('scale', 'bias', then '" + TensorNames.of("{site}", TensorNames.KERNEL)
                        + "' per meta.sites roles)");
            }
            if (TensorNames.SCALE.equals(entry.name) || TensorNames.BIAS.equals(entry.name)) {
                if (entry.shape.length != 1) {
                    throw new ShapeMismatchException(source + ": tensor " + Text.quote(entry.name)
                            + " must have rank 1, got shape " + Text.shape(entry.shape));
                }
                checkPackedLength(entry.name, entry.shape[0], holders, source);
            } else {
                checkStoredKernel(entry, holders.get(0), source);
            }
            stored.put(entry.name, entry);
        }
        for (Map.Entry<String, List<SiteEntry>> name : expected.entrySet()) {
            if (!stored.containsKey(name.getKey())) {
                SiteEntry site = name.getValue().get(0);
                throw new HeaderException(source + ": tensor " + Text.quote(name.getKey()) + " is missing: meta.sites gives site "
                        + Text.quote(site.name) + " the roles " + Text.quote(site.roles));
            }
        }
        int position = 0;
        for (String want : expected.keySet()) {
            String got = entries.get(position).name;
            if (!got.equals(want)) {
                throw new HeaderException(source + ": tensors[" + position + "] is " + Text.quote(got) + ", expected "
                        + Text.quote(want) + ": a delta stores 'scale', 'bias', then each kernel in meta.sites order");
            }
            position++;
        }
        return stored;
    }

    private static void checkPackedLength(String name, long length, List<SiteEntry> holders, String source)
            throws ShapeMismatchException {
        long declared = 0;
        for (SiteEntry site : holders) {
            declared += site.channels;
        }
        if (length == declared) {
            return;
        }
        String problem = "tensor " + Text.quote(name) + " has " + length + " values, but meta.sites declares " + declared;
        long start = 0;
        for (SiteEntry site : holders) {
            if (start + site.channels > length) {
                throw new ShapeMismatchException(source + ": " + problem + ": site " + Text.quote(site.name) + " ("
                        + site.channels + " channels) needs values " + start + ".." + (start + site.channels));
            }
            start += site.channels;
        }
        throw new ShapeMismatchException(source + ": " + problem + ": the last site with a " + name + ", "
                + Text.quote(holders.get(holders.size() - 1).name) + ", ends at value " + declared);
    }

    private static void checkStoredKernel(TensorFile.Entry entry, SiteEntry site, String source)
            throws ShapeMismatchException {
        int rank = "dense".equals(site.op) ? 2 : 4;
        if (entry.shape.length != rank) {
            throw new ShapeMismatchException(source + ": tensor " + Text.quote(entry.name) + " of a " + site.op
                    + " site must have rank " + rank + ", got shape " + Text.shape(entry.shape));
        }
        long outputs = kernelOutputs(site.op, entry.shape);
        if (outputs != site.channels) {
            throw new ShapeMismatchException(source + ": tensor " + Text.quote(entry.name) + " has " + outputs
                    + " output channels (shape " + Text.shape(entry.shape) + "), but meta.sites declares "
                    + site.channels + " for site " + Text.quote(site.name));
        }
    }

    /** Per-site values: slices of the packed scale/bias (one cursor each), kernels as stored. */
    private static List<Delta.Site> unpack(List<SiteEntry> sites, Map<String, TensorFile.Entry> stored, TensorFile file) {
        float[] scales = stored.containsKey(TensorNames.SCALE) ? file.floats(stored.get(TensorNames.SCALE)) : null;
        float[] biases = stored.containsKey(TensorNames.BIAS) ? file.floats(stored.get(TensorNames.BIAS)) : null;
        int scaleCursor = 0;
        int biasCursor = 0;
        List<Delta.Site> result = new ArrayList<Delta.Site>(sites.size());
        for (SiteEntry site : sites) {
            int channels = (int) site.channels; // every cursor ends at its tensor's length, so this fits
            float[] scale = null;
            float[] bias = null;
            float[] kernel = null;
            int[] kernelShape = null;
            if (site.holds(TensorNames.SCALE)) {
                scale = Arrays.copyOfRange(scales, scaleCursor, scaleCursor + channels);
                scaleCursor += channels;
            }
            if (site.holds(TensorNames.BIAS)) {
                bias = Arrays.copyOfRange(biases, biasCursor, biasCursor + channels);
                biasCursor += channels;
            }
            if (site.holds(TensorNames.KERNEL)) {
                TensorFile.Entry entry = stored.get(TensorNames.of(site.name, TensorNames.KERNEL));
                kernel = file.floats(entry);
                kernelShape = new int[entry.shape.length];
                for (int i = 0; i < kernelShape.length; i++) {
                    kernelShape[i] = (int) entry.shape[i];
                }
            }
            result.add(new Delta.Site(site.name, site.op, channels, site.roles, scale, bias, kernel, kernelShape));
        }
        return Collections.unmodifiableList(result);
    }
}
