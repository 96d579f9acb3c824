package dev.edgepatch.patchloader;

import java.nio.ByteBuffer;
import java.util.HashSet;
import java.util.Map;
import java.util.Set;

/**
 * Writes an int8 delta into a copy of an int8 base: section "Applying an int8 delta" of the
 * spec ({@code edgepatch/format/spec.rst}), step for step (quantization vectors, data,
 * sparse edits, then each refold), each check where the spec makes it. A refold reads the
 * base's own values from the original bytes and the input's scale from the patched copy.
 */
final class Int8Patcher {
    private final TfliteModel model;
    private final ByteBuffer base; // original bytes, little-endian
    private final ByteBuffer out; // the copy being patched, little-endian
    private final Int8Delta delta;
    private final String source;
    private final Set<Long> owned = new HashSet<Long>(); // inputs 1 and 2 of the conv, depthwise and dense ops
    private final Set<String> siteOps = new HashSet<String>(); // "input/weight/bias" of each such op

    private Int8Patcher(TfliteModel model, ByteBuffer base, ByteBuffer out, Int8Delta delta, String source) {
        this.model = model;
        this.base = base;
        this.out = out;
        this.delta = delta;
        this.source = source;
        for (TfliteModel.Op op : model.ops) {
            boolean site = op.opcode == TfliteModel.CONV_2D || op.opcode == TfliteModel.DEPTHWISE_CONV_2D
                    || op.opcode == TfliteModel.FULLY_CONNECTED;
            if (site && op.inputs.length >= 3 && Math.min(op.inputs[0], Math.min(op.inputs[1], op.inputs[2])) >= 0) {
                owned.add((long) op.inputs[1]);
                owned.add((long) op.inputs[2]);
                siteOps.add(op.inputs[0] + "/" + op.inputs[1] + "/" + op.inputs[2]);
            }
        }
    }

    /** The head width: the last dimension of subgraph 0's first output, 0 without one. */
    private int headWidth() {
        if (model.outputs.length == 0) {
            return 0;
        }
        int[] shape = model.tensors.get(model.outputs[0]).shape;
        return shape.length > 0 ? shape[shape.length - 1] : 0;
    }

    /** Patches {@code out}, which already holds the base bytes (both little-endian, absolute positions). */
    static void patch(TfliteModel model, ByteBuffer base, ByteBuffer out, Int8Delta delta, String source)
            throws EdgepatchException {
        new Int8Patcher(model, base, out, delta, source).run();
    }

    private void run() throws EdgepatchException {
        int width = headWidth();
        int classes = delta.task().classes().size();
        if (width > 0 && classes > width) {
            throw new ShapeMismatchException("task '" + delta.task().name() + "' has " + classes + " classes, but the head of "
                    + source + " has " + width + " outputs");
        }
        int scaleAt = 0;
        int zeroAt = 0;
        for (Int8Delta.Quant entry : delta.quant) {
            TfliteModel.Tensor tensor = tensor(entry.index);
            checkQuantTarget(entry, tensor, zeroAt);
            if (entry.scales != 0 && entry.scales != tensor.scales[1]
                    || entry.zeroPoints != 0 && entry.zeroPoints != tensor.zeroPoints[1]) {
                throw new ShapeMismatchException("tensor " + entry.index + ": delta has " + entry.scales + " scales / "
                        + entry.zeroPoints + " zero points, base " + source + " has " + tensor.scales[1] + " / "
                        + tensor.zeroPoints[1]);
            }
            for (int i = 0; i < entry.scales && tensor.dataOffset < 0; i++) {
                if (!Int8Limits.ratioInBounds(Float.intBitsToFloat(delta.scaleBits[scaleAt + i]),
                        base.getFloat((int) tensor.scales[0] + 4 * i))) {
                    throw new NonFiniteException("int8 delta for task '" + delta.task().name() + "' sets the scale of "
                            + "activation " + entry.index + " to more than 64 times, or less than 1/64 of, the scale in "
                            + source);
                }
            }
            for (int i = 0; i < entry.scales; i++) {
                out.putInt((int) tensor.scales[0] + 4 * i, delta.scaleBits[scaleAt + i]);
            }
            for (int i = 0; i < entry.zeroPoints; i++) { // int32 in the delta, int64 in the file
                out.putLong((int) tensor.zeroPoints[0] + 8 * i, delta.zeroPoints[zeroAt + i]);
            }
            scaleAt += entry.scales;
            zeroAt += entry.zeroPoints;
        }
        for (Map.Entry<Integer, byte[]> data : delta.data.entrySet()) {
            int index = data.getKey();
            TfliteModel.Tensor tensor = dataTensor(index);
            byte[] raw = data.getValue();
            if (tensor.dataSize != raw.length) {
                throw new ShapeMismatchException("tensor " + index + ": delta has " + raw.length + " data bytes, base "
                        + source + " has " + tensor.dataSize);
            }
            for (int i = 0; i < raw.length; i++) {
                out.put((int) tensor.dataOffset + i, raw[i]);
            }
        }
        for (Map.Entry<Integer, Int8Delta.Edit> edit : delta.edits.entrySet()) {
            int index = edit.getKey();
            TfliteModel.Tensor tensor = dataTensor(index);
            int[] at = edit.getValue().at;
            if (at.length > 0 && at[at.length - 1] >= tensor.dataSize) {
                throw new ShapeMismatchException("tensor " + index + ": delta edits byte " + at[at.length - 1]
                        + ", base " + source + " has " + tensor.dataSize);
            }
            for (int k = 0; k < at.length; k++) {
                out.put((int) tensor.dataOffset + at[k], edit.getValue().put[k]);
            }
        }
        for (Int8Delta.Refold refold : delta.refolds) {
            refold(refold);
        }
    }

    private TfliteModel.Tensor tensor(long index) throws ShapeMismatchException {
        if (index >= model.tensors.size()) {
            throw new ShapeMismatchException("int8 delta for task '" + delta.task().name() + "' patches tensor " + index
                    + "; " + source + " has " + model.tensors.size() + " tensors");
        }
        return model.tensors.get((int) index);
    }

    /** Quantization is the task's on activations, weights and biases; no other constant; symmetric weights. */
    private void checkQuantTarget(Int8Delta.Quant entry, TfliteModel.Tensor tensor, int zeroAt)
            throws ShapeMismatchException {
        if (tensor.dataOffset < 0) {
            return;
        }
        if (!owned.contains(entry.index)) {
            throw new ShapeMismatchException("int8 delta for task '" + delta.task().name() + "' sets the quantization of "
                    + "tensor " + entry.index + ", a constant of " + source + " that is no weight or bias of a conv, "
                    + "depthwise or dense op");
        }
        for (int i = 0; i < entry.zeroPoints; i++) {
            if (delta.zeroPoints[zeroAt + i] != 0) {
                throw new ShapeMismatchException("int8 delta for task '" + delta.task().name() + "' sets zero point "
                        + delta.zeroPoints[zeroAt + i] + " on tensor " + entry.index + ", a weight or bias of " + source
                        + "; those have zero point 0");
            }
        }
    }

    /** A tensor whose constant bytes a delta may overwrite: owned, with data, sharing its buffer with no tensor. */
    private TfliteModel.Tensor dataTensor(long index) throws EdgepatchException {
        TfliteModel.Tensor tensor = tensor(index);
        if (!owned.contains(index)) {
            throw new ShapeMismatchException("int8 delta for task '" + delta.task().name() + "' writes the data of tensor "
                    + index + ", which is no weight or bias of a conv, depthwise or dense op of " + source);
        }
        if (tensor.dataOffset < 0) {
            throw new BaseModelException(source + ": tensor " + index + " has no constant data");
        }
        if (model.bufferUsers(tensor.buffer) != 1) {
            throw new BaseModelException(source + ": tensor " + index
                    + " shares its buffer, so it cannot be patched alone");
        }
        return tensor;
    }

    private void refold(Int8Delta.Refold refold) throws EdgepatchException {
        TfliteModel.Tensor weight = tensor(refold.weight);
        TfliteModel.Tensor bias = tensor(refold.bias);
        TfliteModel.Tensor input = tensor(refold.input);
        if (!siteOps.contains(refold.input + "/" + refold.weight + "/" + refold.bias)) {
            throw new ShapeMismatchException("refold of tensors " + refold.weight + "/" + refold.bias + "/" + refold.input
                    + ": " + source + " has no conv, depthwise or dense op with that weight, bias and input");
        }
        int channels = refold.channels();
        if (weight.type != TfliteModel.INT8 || bias.type != TfliteModel.INT32 || bias.dataSize != 4L * channels
                || weight.scales[1] != channels || bias.scales[1] != channels || input.scales[1] != 1) {
            throw new ShapeMismatchException("refold of tensors " + refold.weight + "/" + refold.bias + "/"
                    + refold.input + ": the delta has " + channels + " channels; base " + source + " has an "
                    + weight.dtypeName() + " kernel with " + weight.scales[1] + " scales, an " + bias.dtypeName()
                    + " bias of " + bias.dataSize + " bytes with " + bias.scales[1] + " scales and an input with "
                    + input.scales[1] + " scales");
        }
        int weightScales = (int) weight.scales[0];
        int biasScales = (int) bias.scales[0];
        int biasData = (int) bias.dataOffset;
        float inputScale = out.getFloat((int) input.scales[0]); // the task's, after quant
        float[] weightScale = new float[channels];
        float[] biasScale = new float[channels];
        boolean positive = true;
        for (int c = 0; c < channels; c++) {
            weightScale[c] = base.getFloat(weightScales + 4 * c) * factor(refold.scaleCodes[c]);
            biasScale[c] = inputScale * weightScale[c];
            positive &= Int8Limits.inBounds(weightScale[c]) && Int8Limits.inBounds(biasScale[c]);
        }
        if (!positive) {
            throw new NonFiniteException("refold of tensor " + refold.weight
                    + ": a recomputed weight or bias scale is not finite and in 1e-15..1e6");
        }
        double step = refold.biasStep;
        int[] newBias = new int[channels];
        for (int c = 0; c < channels; c++) {
            // float64, no fused multiply-add, in numpy's order: (bias * scale + code * step) / new scale
            double value = (double) base.getInt(biasData + 4 * c) * (double) base.getFloat(biasScales + 4 * c)
                    + (double) refold.biasCodes[c] * step;
            newBias[c] = int32(Math.rint(value / (double) biasScale[c]));
        }
        for (int c = 0; c < channels; c++) { // whole vectors one after the other, as numpy writes them
            out.putFloat(weightScales + 4 * c, weightScale[c]);
        }
        for (int c = 0; c < channels; c++) {
            out.putFloat(biasScales + 4 * c, biasScale[c]);
        }
        dataTensor(refold.bias);
        for (int c = 0; c < channels; c++) {
            out.putInt(biasData + 4 * c, newBias[c]);
        }
    }

    /** The factor r a scale code stands for: the float32 with bits 0x3F800000 + s * 2**16. */
    static float factor(short code) {
        return Float.intBitsToFloat(Int8DeltaReader.ONE_BITS + (code << Int8DeltaReader.SCALE_CODE_SHIFT));
    }

    /**
     * numpy's {@code clip(x, -2**31, 2**31 - 1).astype(int32)} on x86-64: a Java cast already
     * saturates; NaN (a non-finite base bias scale) becomes int32's minimum there, not 0.
     */
    static int int32(double rounded) {
        return Double.isNaN(rounded) ? Integer.MIN_VALUE : (int) rounded;
    }
}
