package dev.edgepatch.patchloader;

import java.util.Arrays;
import java.util.Collections;
import java.util.List;

/**
 * Constants of the edgepatch tensor file format, version 2 (version 1 still read). The specification is
 * {@code edgepatch/format/spec.rst}; names here match those of its section "Constants"
 * (the site-name limit lives with the naming rule, in {@link TensorNames}).
 */
final class DeltaFormat {
    static final byte[] MAGIC = {'E', 'D', 'G', 'E', 'P', 'T', 'C', 'H'};
    static final long FORMAT_VERSION = 2;
    /** Versions a reader accepts: 1 had a scalar preprocessing scale and offset (RGB). */
    static final long[] READABLE_VERSIONS = {1, 2};
    static final int PREAMBLE_BYTES = 16;
    static final int TRAILER_BYTES = 32;
    static final int HEADER_ALIGN = 16;
    static final int ALIGN = 8;
    static final long MIN_HEADER_BYTES = 16;
    static final long MAX_HEADER_BYTES = 1L << 20;
    static final long MIN_FILE_BYTES = PREAMBLE_BYTES + MIN_HEADER_BYTES + TRAILER_BYTES;
    static final long MAX_FILE_BYTES = 1L << 30;
    static final int MAX_TENSORS = 8192;
    static final int MAX_NAME_BYTES = 256;
    static final int MAX_RANK = 4;
    /** The product of a tensor's dimensions, zeros counted as 1, is at most this (2^28). */
    static final long MAX_TENSOR_ELEMENTS = 1L << 28;
    static final int MAX_SITES = 8192;
    static final long MIN_RESOLUTION = 8;
    static final long MAX_RESOLUTION = 1024;

    static final String FLOAT32 = "float32";
    static final String FLOAT16 = "float16";
    static final String DELTA = "delta";
    static final String INT8_DELTA = "int8_delta";
    static final List<String> FILE_KINDS = list(DELTA, "patch", INT8_DELTA);
    /** The kinds a task delta file may be (spec, section "Container": a task delta file). */
    static final List<String> TASK_DELTA_KINDS = list(DELTA, INT8_DELTA);
    /** dtype names in the spec's table order, with their item sizes. */
    static final List<String> DTYPES = list(FLOAT32, FLOAT16, "int32", "int8", "uint8");
    private static final int[] ITEM_SIZES = {4, 2, 4, 1, 1};
    static final List<String> HEADER_KEYS = list("file_kind", "meta", "payload_bytes", "tensors");
    static final List<String> TENSOR_KEYS = list("dtype", "name", "nbytes", "offset", "shape");
    static final List<String> META_KEYS = list("base_sha256", "kinds", "sites", "task");
    static final List<String> TASK_KEYS = list("classes", "name", "preprocessing", "resolution");
    static final List<String> PREPROCESSING_KEYS = list("channels", "offset", "scale"); // meta.task.preprocessing
    static final List<String> V1_PREPROCESSING_KEYS = list("offset", "scale"); // the same, in a version 1 file
    static final List<String> CHANNEL_ORDERS = list("rgb", "bgr");
    /** meta.task.preprocessing.resize: optional (absent, and in version 1 files: "bilinear"); see ImageResampler. */
    static final String RESIZE_KEY = "resize";
    static final List<String> RESIZE_FILTERS = list("bilinear");
    static final double MIN_ABS_SCALE = 1e-30;
    static final double MAX_ABS_PREPROCESSING = 1e6;
    static final List<String> SITE_OPS = list("conv", "depthwise", "dense");
    static final List<String> ROLE_SETS = list("scale", "bias", "scale+bias", "kernel", "kernel+bias");

    private DeltaFormat() {
    }

    static int itemSize(String dtype) {
        return ITEM_SIZES[DTYPES.indexOf(dtype)];
    }

    static boolean isFloat(String dtype) {
        return FLOAT32.equals(dtype) || FLOAT16.equals(dtype);
    }

    /** The kinds joined by {@code ", "}, as the error messages list them. */
    static String joined(List<String> kinds) {
        StringBuilder out = new StringBuilder();
        for (String kind : kinds) {
            out.append(out.length() == 0 ? "" : ", ").append(kind);
        }
        return out.toString();
    }

    static List<String> list(String... items) {
        return Collections.unmodifiableList(Arrays.asList(items));
    }
}
