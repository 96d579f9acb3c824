package dev.edgepatch.patchloader;

import java.io.File;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.List;
import java.util.Map;

/**
 * One task's float delta against a float base model, verified and unpacked per site.
 *
 * <p>Read it with {@link #decode(ByteBuffer, String)} or {@link #read(File)}; both run the
 * whole verification order of the format (version, SHA-256 trailer, header schema, zero
 * padding, finite values, delta rules) and throw the first failure. Tensors are held as
 * float32, whatever the file stores (float16 is widened exactly). A Delta is immutable.
 *
 * <pre>{@code
 * TfliteBase base = TfliteBase.load(baseBytes, "base.tflite");    // once
 * Delta flowers = Delta.read(new File(dir, "flowers.delta"));       // verified
 * ByteBuffer model = base.apply(flowers);                           // direct, ready for LiteRT
 * Interpreter interpreter = new Interpreter(model);
 * }</pre>
 */
public final class Delta extends TaskDelta {
    /** What a task is: its name, class labels, input resolution and preprocessing. */
    public static final class Task {
        private final String name;
        private final List<String> classes;
        private final int resolution;
        private final String channels;
        private final double[] scale;
        private final double[] offset;
        private final String resize;

        Task(String name, List<String> classes, int resolution, String channels, double[] scale, double[] offset,
                String resize) {
            this.name = name;
            this.classes = classes;
            this.resolution = resolution;
            this.channels = channels;
            this.scale = scale.clone();
            this.offset = offset.clone();
            this.resize = resize;
        }

        public String name() {
            return name;
        }

        /** Class labels, in logit order (unmodifiable). */
        public List<String> classes() {
            return classes;
        }

        /** Square input size in pixels the task was trained at. */
        public int resolution() {
            return resolution;
        }

        /**
         * The channel order the model wants: {@code "rgb"}, or {@code "bgr"} (model channel 0 is the
         * image's blue). Model input[c] = pixel[order[c]] (0..255) * preprocessingScale()[c]
         * + preprocessingOffset()[c], c in the model's order. Version 1 files read as "rgb".
         */
        public String channels() {
            return channels;
        }

        /** For each model channel, the image channel it reads: 0 red, 1 green, 2 blue. */
        public int[] pixelOrder() {
            return "bgr".equals(channels) ? new int[] {2, 1, 0} : new int[] {0, 1, 2};
        }

        /** Per-channel scale, in the model's channel order (a copy). */
        public double[] preprocessingScale() {
            return scale.clone();
        }

        /** Per-channel offset, in the model's channel order (a copy). */
        public double[] preprocessingOffset() {
            return offset.clone();
        }

        /**
         * The filter that brings a decoded image to {@link #resolution()} square: always {@code "bilinear"}
         * (the reader refuses any other), which {@link ImageResampler} implements.
         */
        public String resize() {
            return resize;
        }
    }

    /**
     * One patched layer: its name (the Keras layer name), op ({@code conv}, {@code depthwise}
     * or {@code dense}), output channels, and which tensors the delta holds for it.
     */
    public static final class Site {
        final String name;
        final String op;
        final int channels;
        final String roles;
        final float[] scale; // [channels] or null
        final float[] bias; // [channels] or null
        final float[] kernel; // Keras layout, or null
        final int[] kernelShape; // conv [H, W, I, O], depthwise [H, W, C, M], dense [I, O]; or null

        Site(String name, String op, int channels, String roles, float[] scale, float[] bias, float[] kernel,
                int[] kernelShape) {
            this.name = name;
            this.op = op;
            this.channels = channels;
            this.roles = roles;
            this.scale = scale;
            this.bias = bias;
            this.kernel = kernel;
            this.kernelShape = kernelShape;
        }

        public String name() {
            return name;
        }

        public String op() {
            return op;
        }

        public int channels() {
            return channels;
        }

        /** One of {@code scale}, {@code bias}, {@code scale+bias}, {@code kernel}, {@code kernel+bias}. */
        public String roles() {
            return roles;
        }

        /** A copy of the per-output-channel multiplier of the base kernel, or null. */
        public float[] scale() {
            return scale == null ? null : scale.clone();
        }

        /** A copy of the folded bias, or null. */
        public float[] bias() {
            return bias == null ? null : bias.clone();
        }

        /** A copy of the full folded kernel in Keras layout (see {@link #kernelShape()}), or null. */
        public float[] kernel() {
            return kernel == null ? null : kernel.clone();
        }

        public int[] kernelShape() {
            return kernelShape == null ? null : kernelShape.clone();
        }
    }

    private final Task task;
    private final List<String> kinds;
    private final Map<String, String> baseSha256;
    private final List<Site> sites;

    Delta(Task task, List<String> kinds, Map<String, String> baseSha256, List<Site> sites) {
        this.task = task;
        this.kinds = kinds;
        this.baseSha256 = baseSha256;
        this.sites = sites;
    }

    @Override
    public Task task() {
        return task;
    }

    /** Patch kinds private to this task, e.g. [scale_bias, logits] (unmodifiable). */
    public List<String> kinds() {
        return kinds;
    }

    /** Runtime format ({@code tflite}, {@code onnx}) to the SHA-256 of the base it was made for. */
    public Map<String, String> baseSha256() {
        return baseSha256;
    }

    /** The patched sites, in the file's site order (unmodifiable). */
    public List<Site> sites() {
        return sites;
    }

    /**
     * Verifies and unpacks a delta held in memory: the bytes between {@code data}'s position
     * and limit (the buffer's position is not changed; nothing is kept from it).
     *
     * @param source the name messages give for the data, usually the file or asset path
     * @throws DeltaFormatException (or a subclass) the bytes are not a valid delta file
     * @throws NonFiniteException a tensor holds NaN or Inf
     * @throws ShapeMismatchException a tensor's shape contradicts the delta's own sites
     */
    public static Delta decode(ByteBuffer data, String source) throws EdgepatchException {
        return DeltaReader.decode(TensorFileReader.decode(data, DeltaFormat.DELTA, source), source);
    }

    /** {@link #decode(ByteBuffer, String)} for a byte array. */
    public static Delta decode(byte[] data, String source) throws EdgepatchException {
        return decode(ByteBuffer.wrap(data), source);
    }

    /**
     * Reads and verifies a delta file. Its size is checked before a byte is read.
     *
     * @throws MissingFileException the path does not exist or is not a regular file
     * @throws EdgepatchException as {@link #decode(ByteBuffer, String)}, naming the path
     * @throws IOException reading the file failed
     */
    public static Delta read(File file) throws EdgepatchException, IOException {
        return decode(readBytes(file), file.getPath());
    }
}
