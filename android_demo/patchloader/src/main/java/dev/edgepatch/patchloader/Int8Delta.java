package dev.edgepatch.patchloader;

import java.io.File;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.List;
import java.util.Map;

/**
 * One task's int8 delta against an int8 base (file kind {@code int8_delta}), verified. The
 * specification is section "int8 delta" of {@code edgepatch/format/spec.rst}: keyed by tensor
 * index in the base, it holds new quantization vectors, new or sparsely edited tensor bytes,
 * and compact refold codes from which the loader recomputes a conv's weight scales, bias
 * scales and int32 biases. An Int8Delta is immutable.
 *
 * <pre>{@code
 * TfliteBase base = TfliteBase.load(int8BaseBytes, "base_int8.tflite");   // an int8 base
 * Int8Delta flowers = Int8Delta.read(new File(dir, "flowers.int8.delta"));
 * ByteBuffer model = base.apply(flowers);
 * }</pre>
 */
public final class Int8Delta extends TaskDelta {
    /** One meta.quant entry: a tensor's new scale and zero-point counts (0: unchanged). */
    static final class Quant {
        final long index; // a JSON index past 2**63 - 1 is held as Long.MAX_VALUE: no base has that many
        final int scales;
        final int zeroPoints;

        Quant(long index, int scales, int zeroPoints) {
            this.index = index;
            this.scales = scales;
            this.zeroPoints = zeroPoints;
        }
    }

    /** A sparse edit: byte {@code at[k]} of the tensor's data becomes {@code put[k]}. */
    static final class Edit {
        final int[] at; // ascending, unique, >= 0
        final byte[] put;

        Edit(int[] at, byte[] put) {
            this.at = at;
            this.put = put;
        }
    }

    /** One meta.refold entry with its codes and bias step. */
    static final class Refold {
        final long weight;
        final long bias;
        final long input;
        final short[] scaleCodes; // [channels], |s| <= SCALE_CODE_LIMIT
        final short[] biasCodes; // [channels]
        final float biasStep; // finite and > 0

        Refold(long weight, long bias, long input, short[] scaleCodes, short[] biasCodes, float biasStep) {
            this.weight = weight;
            this.bias = bias;
            this.input = input;
            this.scaleCodes = scaleCodes;
            this.biasCodes = biasCodes;
            this.biasStep = biasStep;
        }

        int channels() {
            return scaleCodes.length;
        }
    }

    private final Delta.Task task;
    private final String baseSha256;
    final List<Quant> quant;
    final int[] scaleBits; // float32 bit patterns, packed in quant order (copied, never computed on)
    final int[] zeroPoints; // packed in quant order
    final Map<Integer, byte[]> data; // in the spec's check order (sorted tensor names)
    final Map<Integer, Edit> edits; // likewise
    final List<Refold> refolds;

    Int8Delta(Delta.Task task, String baseSha256, List<Quant> quant, int[] scaleBits, int[] zeroPoints,
            Map<Integer, byte[]> data, Map<Integer, Edit> edits, List<Refold> refolds) {
        this.task = task;
        this.baseSha256 = baseSha256;
        this.quant = quant;
        this.scaleBits = scaleBits;
        this.zeroPoints = zeroPoints;
        this.data = data;
        this.edits = edits;
        this.refolds = refolds;
    }

    @Override
    public Delta.Task task() {
        return task;
    }

    /** Lowercase hex SHA-256 of the int8 base it was made for ({@code meta.base_sha256.tflite_int8}). */
    public String baseSha256() {
        return baseSha256;
    }

    /** How many convs the delta re-folds from codes (0 for an exact delta). */
    public int refoldCount() {
        return refolds.size();
    }

    /**
     * Verifies and unpacks an int8 delta held in memory: the bytes between {@code data}'s
     * position and limit (the buffer's position is not changed; nothing is kept from it).
     *
     * @param source the name messages give for the data, usually the file or asset path
     * @throws DeltaFormatException (or a subclass) the bytes are not a valid int8 delta file
     * @throws NonFiniteException a tensor holds NaN or Inf, or a refold bias step is not > 0
     */
    public static Int8Delta decode(ByteBuffer data, String source) throws EdgepatchException {
        return Int8DeltaReader.decode(TensorFileReader.decode(data, DeltaFormat.INT8_DELTA, source), source);
    }

    /** {@link #decode(ByteBuffer, String)} for a byte array. */
    public static Int8Delta decode(byte[] data, String source) throws EdgepatchException {
        return decode(ByteBuffer.wrap(data), source);
    }

    /**
     * Reads and verifies an int8 delta file. Its size is checked before a byte is read.
     *
     * @throws MissingFileException the path does not exist or is not a regular file
     * @throws EdgepatchException as {@link #decode(ByteBuffer, String)}, naming the path
     * @throws IOException reading the file failed
     */
    public static Int8Delta read(File file) throws EdgepatchException, IOException {
        return decode(readBytes(file), file.getPath());
    }
}
