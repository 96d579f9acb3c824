package dev.edgepatch.patchloader;

import java.nio.ByteBuffer;
import java.nio.FloatBuffer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * Checks a delta against the base's sites and computes what each site receives, in the
 * TFLite layout: section "Applying a float delta" of the spec ({@code edgepatch/format/spec.rst}),
 * with "Layouts and head padding" for the layouts and the head.
 *
 * <ul>
 *   <li>scale: the base's folded kernel times the per-output-channel multiplier, along
 *       the output axis (OHWI axis 0, depthwise [1, H, W, C*M] axis 3, FC [O, I] axis 0);</li>
 *   <li>kernel: the task's kernel from Keras layout (conv [H, W, I, O], depthwise
 *       [H, W, C, M], dense [I, O]) to TFLite's;</li>
 *   <li>bias: the task's folded bias.</li>
 * </ul>
 * A dense head is zero-padded to the base's head width (the bias of the first dense site
 * in op order); a kernel without a bias gets a zero bias. A scale whose product with the
 * base kernel overflows float32 is refused (the spec's scale overflow rule).
 */
final class SiteUpdates {
    /** What a delta writes into one site; null fields leave the base's value. */
    static final class Update {
        final String name;
        final TfliteSites.Site slots;
        final float[] scale;
        final float[] kernel; // TFLite layout
        final float[] bias;

        Update(String name, TfliteSites.Site slots, float[] scale, float[] kernel, float[] bias) {
            this.name = name;
            this.slots = slots;
            this.scale = scale;
            this.kernel = kernel;
            this.bias = bias;
        }
    }

    private SiteUpdates() {
    }

    /** The output-channel axis of each TFLite kernel layout. */
    static int outAxis(String op) {
        return "depthwise".equals(op) ? 3 : 0;
    }

    static int headWidth(Map<String, TfliteSites.Site> sites) {
        for (TfliteSites.Site site : sites.values()) {
            if ("dense".equals(site.op)) {
                return site.bias.shape.length > 0 ? site.bias.shape[0] : 0;
            }
        }
        return 0;
    }

    /** Per site, the largest |base kernel value| of each output channel: what a scale may multiply. */
    static Map<String, double[]> kernelPeaks(ByteBuffer base, Map<String, TfliteSites.Site> sites) {
        Map<String, double[]> peaks = new HashMap<String, double[]>();
        for (Map.Entry<String, TfliteSites.Site> entry : sites.entrySet()) {
            TfliteSites.Slot kernel = entry.getValue().kernel;
            int axis = outAxis(entry.getValue().op);
            int channels = kernel.shape.length > axis ? kernel.shape[axis] : 0;
            int inner = 1;
            for (int i = axis + 1; i < kernel.shape.length; i++) {
                inner *= kernel.shape[i];
            }
            double[] peak = new double[channels];
            FloatBuffer values = TfliteBase.floats(base, kernel);
            for (int i = 0; i < kernel.count && channels > 0; i++) {
                int c = (i / inner) % channels;
                peak[c] = Math.max(peak[c], Math.abs((double) values.get(i)));
            }
            peaks.put(entry.getKey(), peak);
        }
        return peaks;
    }

    /** Checks every site of {@code delta} against the base; writes nothing. */
    static List<Update> compute(Map<String, TfliteSites.Site> sites, Map<String, double[]> peaks, int headWidth,
            Delta delta, String source) throws EdgepatchException {
        int classes = delta.task().classes().size();
        if (headWidth > 0 && classes > headWidth) {
            throw new ShapeMismatchException("task '" + delta.task().name() + "' has " + classes + " classes, but the head of "
                    + source + " has " + headWidth + " outputs");
        }
        List<Update> updates = new ArrayList<Update>(delta.sites().size());
        for (Delta.Site site : delta.sites()) {
            TfliteSites.Site slots = sites.get(site.name);
            if (slots == null) {
                throw new ShapeMismatchException("delta for task '" + delta.task().name() + "' patches site `" + site.name
                        + "`, which " + source + " lacks");
            }
            if (!slots.op.equals(site.op)) {
                throw new ShapeMismatchException("site `" + site.name + "` is a " + site.op + " in the delta but a "
                        + slots.op + " in " + source);
            }
            updates.add(update(site, slots, headWidth, source));
        }
        for (Update update : updates) { // after every site's names and shapes, as the spec orders
            if (update.scale != null) {
                checkRefold(update.name, update.scale, peaks.get(update.name), source);
            }
        }
        return updates;
    }

    private static Update update(Delta.Site site, TfliteSites.Site slots, int width, String source)
            throws EdgepatchException {
        float[] kernel = site.kernel;
        int[] kernelShape = site.kernelShape;
        float[] bias = site.bias;
        float[] scale = null;
        if ("dense".equals(site.op) && kernel != null) {
            checkHeadWidth(kernelShape[1], width);
            kernel = padColumns(kernel, kernelShape[0], kernelShape[1], width);
            kernelShape = new int[] {kernelShape[0], width};
            bias = Arrays.copyOf(bias != null ? bias : new float[0], width);
        } else if ("dense".equals(site.op) && bias != null) {
            checkHeadWidth(bias.length, width);
            bias = Arrays.copyOf(bias, width);
        }
        if (kernel != null) {
            int[] runtimeShape = runtimeShape(site.op, kernelShape);
            if (!Arrays.equals(runtimeShape, slots.kernel.shape)) {
                throw new ShapeMismatchException("`" + TensorNames.of(site.name, TensorNames.KERNEL)
                        + "`: delta gives shape " + Text.shape(runtimeShape) + ", base " + source + " has "
                        + Text.shape(slots.kernel.shape));
            }
            kernel = toRuntime(site.op, kernel, kernelShape);
        } else if (site.scale != null) {
            int axis = outAxis(site.op);
            if (slots.kernel.shape.length <= axis) {
                throw new BaseModelException(source + ": kernel of site `" + site.name + "` has shape "
                        + Text.shape(slots.kernel.shape) + ", expected rank " + (axis + 1) + " or more");
            }
            int channels = slots.kernel.shape[axis];
            if (site.scale.length != channels) {
                throw new ShapeMismatchException("`" + TensorNames.of(site.name, TensorNames.SCALE) + "`: delta has "
                        + site.scale.length + " channels, base " + source + " has " + channels);
            }
            scale = site.scale;
        }
        if (bias != null && !(slots.bias.shape.length == 1 && slots.bias.shape[0] == bias.length)) {
            throw new ShapeMismatchException("`" + TensorNames.of(site.name, TensorNames.BIAS) + "`: delta gives shape ["
                    + bias.length + "], base " + source + " has " + Text.shape(slots.bias.shape));
        }
        return new Update(site.name, slots, scale, kernel, bias);
    }

    /** A finite scale can still overflow the float32 product, and every output of the task with it. */
    private static void checkRefold(String name, float[] scale, double[] peak, String source)
            throws NonFiniteException {
        for (int c = 0; c < scale.length; c++) {
            if (Math.abs((double) scale[c]) * peak[c] > Float.MAX_VALUE) {
                throw new NonFiniteException("`" + TensorNames.of(name, TensorNames.SCALE) + "`: channel " + c
                        + " times the base kernel of " + source + " overflows float32");
            }
        }
    }

    private static void checkHeadWidth(int classes, int width) throws ShapeMismatchException {
        if (classes > width) {
            throw new ShapeMismatchException("head has " + classes + " classes, more than the base head width " + width);
        }
    }

    /** [rows, columns] to [rows, width] with zero columns on the right. */
    private static float[] padColumns(float[] values, int rows, int columns, int width) {
        float[] out = new float[rows * width];
        for (int r = 0; r < rows; r++) {
            System.arraycopy(values, r * columns, out, r * width, columns);
        }
        return out;
    }

    static int[] runtimeShape(String op, int[] shape) {
        if ("conv".equals(op)) {
            return new int[] {shape[3], shape[0], shape[1], shape[2]};
        }
        if ("depthwise".equals(op)) {
            return new int[] {1, shape[0], shape[1], shape[2] * shape[3]};
        }
        return new int[] {shape[1], shape[0]};
    }

    /** Keras layout to TFLite layout: conv HWIO to OHWI, depthwise as is, dense IO to OI. */
    static float[] toRuntime(String op, float[] kernel, int[] shape) {
        if ("depthwise".equals(op)) {
            return kernel; // [H, W, C, M] and [1, H, W, C*M] share one memory order
        }
        int outputs = shape[shape.length - 1];
        int inner = kernel.length / Math.max(outputs, 1); // H*W*I for conv, I for dense
        float[] out = new float[kernel.length];
        for (int i = 0; i < inner; i++) {
            for (int o = 0; o < outputs; o++) {
                out[o * inner + i] = kernel[i * outputs + o];
            }
        }
        return out;
    }
}
