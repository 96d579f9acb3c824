package dev.edgepatch.patchloader;

import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * Subgraph 0 of a {@code .tflite} file, read as section "Bases" (Reading a .tflite base) of the
 * spec ({@code edgepatch/format/spec.rst}) says. It reads only the fields below and never
 * copies tensor data: it reports where the bytes lie, in either buffer layout.
 *
 * <ul>
 *   <li>Model: 1 operator_codes [OperatorCode], 2 subgraphs [SubGraph], 4 buffers [Buffer]</li>
 *   <li>SubGraph: 0 tensors [Tensor], 1 inputs [i32], 2 outputs [i32], 3 operators [Operator]</li>
 *   <li>Tensor: 0 shape [i32], 1 type i8, 2 buffer u32, 3 name string, 4 quantization
 *       [QuantizationParameters], 7 shape_signature [i32]</li>
 *   <li>QuantizationParameters: 2 scale [f32], 3 zero_point [i64]</li>
 *   <li>Buffer: 0 data [u8], 1 offset u64, 2 size u64</li>
 *   <li>Operator: 0 opcode_index u32, 1 inputs [i32], 2 outputs [i32]</li>
 *   <li>OperatorCode: 0 deprecated_builtin_code i8, 3 builtin_code i32 (the larger wins)</li>
 * </ul>
 *
 * <p>Inline layout (the default): a buffer's bytes are its {@code data} vector. External
 * layout (files over 2 GB, or the converter's {@code _experimental_use_buffer_offset}):
 * {@code offset > 1} and {@code size} give an absolute byte range after the flatbuffer.
 */
final class TfliteModel {
    static final int CONV_2D = 3;
    static final int DEPTHWISE_CONV_2D = 4;
    static final int FULLY_CONNECTED = 9;
    static final int FLOAT32 = 0;
    static final int INT32 = 2;
    static final int INT8 = 9;

    /** TensorType code -> item size, for the types whose data size can be checked (0: unknown). */
    private static final int[] ITEM_SIZES = {4, 2, 4, 1, 8, 0, 1, 2, 8, 1, 8, 16, 8, 0, 0, 4, 2};
    private static final String[] TYPE_NAMES = {"float32", "float16", "int32", "uint8", "int64", "string", "bool",
        "int16", "complex64", "int8", "float64", "complex128", "uint64", "resource", "variant", "uint32", "uint16"};
    /** {absolute offset, count} of an absent vector. */
    private static final long[] ABSENT = {0, 0};

    static final class Tensor {
        final int index;
        final String name;
        final int[] shape;
        final int type; // TensorType code
        final long buffer;
        final long dataOffset; // absolute position of the data in the file, -1 when the buffer is empty
        final long dataSize;
        final long[] scales; // {absolute offset, count} of the float32 quantization scales; {0, 0} if none
        final long[] zeroPoints; // {absolute offset, count} of the int64 zero points; {0, 0} if none

        Tensor(int index, String name, int[] shape, int type, long buffer, long dataOffset, long dataSize,
                long[] scales, long[] zeroPoints) {
            this.index = index;
            this.name = name;
            this.shape = shape;
            this.type = type;
            this.buffer = buffer;
            this.dataOffset = dataOffset;
            this.dataSize = dataSize;
            this.scales = scales;
            this.zeroPoints = zeroPoints;
        }

        String typeName() {
            return type >= 0 && type < TYPE_NAMES.length ? TYPE_NAMES[type] : "type " + type;
        }

        /** The type as the Python reader's numpy dtype prints it: None for types numpy cannot hold. */
        String dtypeName() {
            return type >= 0 && type < TYPE_NAMES.length && ITEM_SIZES[type] > 0 ? TYPE_NAMES[type] : "None";
        }
    }

    static final class Op {
        final int index;
        final int opcode; // builtin code
        final int[] inputs; // -1: an omitted optional input
        final int[] outputs;

        Op(int index, int opcode, int[] inputs, int[] outputs) {
            this.index = index;
            this.opcode = opcode;
            this.inputs = inputs;
            this.outputs = outputs;
        }
    }

    final List<Tensor> tensors;
    final List<Op> ops;
    final int[] outputs; // subgraph 0's output tensor indices
    private final Map<Long, Integer> bufferUsers = new HashMap<Long, Integer>();

    private TfliteModel(List<Tensor> tensors, List<Op> ops, int[] outputs) {
        this.tensors = tensors;
        this.ops = ops;
        this.outputs = outputs;
        for (Tensor tensor : tensors) {
            Integer count = bufferUsers.get(tensor.buffer);
            bufferUsers.put(tensor.buffer, count == null ? 1 : count + 1);
        }
    }

    /** How many tensors of subgraph 0 name {@code buffer}. */
    int bufferUsers(long buffer) {
        Integer count = bufferUsers.get(buffer);
        return count == null ? 0 : count;
    }

    /**
     * True when every CONV_2D and DEPTHWISE_CONV_2D kernel is int8 (a full-integer model): the
     * int8 TFLite rule of section "Bases" of the spec ({@code edgepatch/format/spec.rst}).
     */
    boolean isInt8() {
        boolean any = false;
        for (Op op : ops) {
            if ((op.opcode == CONV_2D || op.opcode == DEPTHWISE_CONV_2D) && op.inputs.length > 1) {
                // An omitted input (-1) indexes from the end (the spec's int8 base rule); so here too.
                int index = op.inputs[1] >= 0 ? op.inputs[1] : tensors.size() + op.inputs[1];
                if (index < 0 || tensors.get(index).type != INT8) {
                    return false;
                }
                any = true;
            }
        }
        return any;
    }

    static String opName(int code) {
        switch (code) {
            case CONV_2D:
                return "CONV_2D";
            case DEPTHWISE_CONV_2D:
                return "DEPTHWISE_CONV_2D";
            case FULLY_CONNECTED:
                return "FULLY_CONNECTED";
            default:
                return "BUILTIN_" + code;
        }
    }

    /** Reads subgraph 0 of the file held in {@code data} (position 0 to limit). */
    static TfliteModel parse(ByteBuffer data, String source) throws BaseModelException {
        if (data.limit() < 8) {
            throw new BaseModelException(source + ": file is " + data.limit()
                    + " bytes, too short for a TFLite header (8 bytes)");
        }
        byte[] identifier = new byte[4];
        for (int i = 0; i < 4; i++) {
            identifier[i] = data.get(4 + i);
        }
        if (identifier[0] != 'T' || identifier[1] != 'F' || identifier[2] != 'L' || identifier[3] != '3') {
            throw new BaseModelException(source + ": not a TFLite model: file identifier is "
                    + Text.bytesLiteral(identifier) + ", expected b'TFL3'");
        }
        try {
            return read(new FlatBufferReader(data));
        } catch (FlatBufferReader.Malformed error) {
            throw new BaseModelException(source + ": " + error.getMessage());
        }
    }

    private static TfliteModel read(FlatBufferReader fb) throws FlatBufferReader.Malformed {
        FlatBufferReader.Table model = fb.table(fb.u32(0), "model");
        long[] codePositions = fb.tables(model, 1, "model", "operator_codes");
        int[] opcodes = new int[codePositions.length];
        for (int i = 0; i < opcodes.length; i++) {
            String what = "operator code " + i;
            FlatBufferReader.Table table = fb.table(codePositions[i], what);
            long deprecated = fb.scalar(table, 0, 1, 0, what, "deprecated_builtin_code");
            long builtin = (int) fb.scalar(table, 3, 4, 0, what, "builtin_code");
            opcodes[i] = (int) Math.max(deprecated, builtin);
        }
        long[] subgraphs = fb.tables(model, 2, "model", "subgraphs");
        if (subgraphs.length == 0) {
            throw new FlatBufferReader.Malformed("model has no subgraphs");
        }
        long[] buffers = fb.tables(model, 4, "model", "buffers");
        FlatBufferReader.Table graph = fb.table(subgraphs[0], "subgraph 0");
        List<Tensor> tensors = readTensors(fb, graph, buffers);
        List<Op> ops = readOps(fb, graph, opcodes, tensors.size());
        checkIndices(fb.int32s(graph, 1, "subgraph 0", "inputs"), tensors.size(), "subgraph 0 input");
        int[] outputs = fb.int32s(graph, 2, "subgraph 0", "outputs");
        checkIndices(outputs, tensors.size(), "subgraph 0 output");
        return new TfliteModel(tensors, ops, outputs);
    }

    private static List<Tensor> readTensors(FlatBufferReader fb, FlatBufferReader.Table graph, long[] buffers)
            throws FlatBufferReader.Malformed {
        Map<Long, long[]> located = new HashMap<Long, long[]>();
        long[] positions = fb.tables(graph, 0, "subgraph 0", "tensors");
        List<Tensor> tensors = new ArrayList<Tensor>(positions.length);
        for (int index = 0; index < positions.length; index++) {
            String what = "tensor " + index;
            FlatBufferReader.Table table = fb.table(positions[index], what);
            int[] shape = fb.int32s(table, 0, what, "shape");
            int type = (int) fb.scalar(table, 1, 1, 0, what, "type");
            long buffer = fb.scalar(table, 2, 4, 0, what, "buffer") & 0xffffffffL;
            String name = fb.string(table, 3, what, "name");
            fb.int32s(table, 7, what, "shape_signature"); // read for its bounds checks, as the Python reader does
            long[][] quantization = readQuantization(fb, table, what);
            if (buffer >= buffers.length) {
                throw new FlatBufferReader.Malformed(what + " (" + Text.quote(name) + "): buffer index " + buffer
                        + " is out of range (model has " + buffers.length + " buffers)");
            }
            long[] data = located.get(buffer);
            if (data == null) {
                data = locateBuffer(fb, buffers[(int) buffer], (int) buffer);
                located.put(buffer, data);
            }
            Tensor tensor = new Tensor(index, name, shape, type, buffer, data[0], data[1], quantization[0],
                    quantization[1]);
            if (tensor.dataOffset >= 0 && type >= 0 && type < ITEM_SIZES.length && ITEM_SIZES[type] > 0) {
                checkDataSize(what, tensor);
            }
            tensors.add(tensor);
        }
        return tensors;
    }

    /** {scales, zero points} of a tensor's QuantizationParameters, each {absolute offset, count}. */
    private static long[][] readQuantization(FlatBufferReader fb, FlatBufferReader.Table table, String what)
            throws FlatBufferReader.Malformed {
        long pos = fb.subtable(table, 4, what, "quantization");
        if (pos < 0) {
            return new long[][] {ABSENT, ABSENT};
        }
        String where = what + " quantization";
        FlatBufferReader.Table quantization = fb.table(pos, where);
        long[] scales = fb.vector(quantization, 2, 4, where, "scale");
        long[] zeroPoints = fb.vector(quantization, 3, 8, where, "zero_point");
        return new long[][] {scales, zeroPoints};
    }

    /** {absolute data offset or -1 if empty, data size} of one Buffer. */
    private static long[] locateBuffer(FlatBufferReader fb, long pos, int index) throws FlatBufferReader.Malformed {
        String what = "buffer " + index;
        FlatBufferReader.Table table = fb.table(pos, what);
        long[] data = fb.vector(table, 0, 1, what, "data");
        long offset = fb.scalar(table, 1, 8, 0, what, "offset"); // u64: compare as unsigned
        // LiteRT reads offset 0 and 1 as "not external"; 1 is the converter's placeholder.
        if (offset >= 0 && offset <= 1) {
            return data[1] != 0 ? data : new long[] {-1, 0};
        }
        if (data[1] != 0) {
            throw new FlatBufferReader.Malformed(what + " has both inline data (" + data[1]
                    + " bytes) and an external offset (" + unsigned(offset) + ")");
        }
        long size = fb.scalar(table, 2, 8, 0, what, "size");
        if (offset < 0 || size < 0 || offset > fb.size || size > fb.size - offset) {
            throw new FlatBufferReader.Malformed(what + " external data at offset " + unsigned(offset) + " (+"
                    + unsigned(size) + " bytes) is outside the file (" + fb.size + " bytes)");
        }
        return size != 0 ? new long[] {offset, size} : new long[] {-1, 0};
    }

    private static String unsigned(long value) {
        return value >= 0 ? Long.toString(value) : new java.math.BigInteger(Long.toString(value >>> 1))
                .shiftLeft(1).add(java.math.BigInteger.valueOf(value & 1)).toString();
    }

    private static void checkDataSize(String what, Tensor tensor) throws FlatBufferReader.Malformed {
        java.math.BigInteger expected = java.math.BigInteger.valueOf(ITEM_SIZES[tensor.type]);
        int smallest = 0;
        for (int dim : tensor.shape) {
            expected = expected.multiply(java.math.BigInteger.valueOf(dim));
            smallest = Math.min(smallest, dim);
        }
        if (!expected.equals(java.math.BigInteger.valueOf(tensor.dataSize)) || smallest < 0) {
            throw new FlatBufferReader.Malformed(what + " (" + Text.quote(tensor.name) + "): buffer " + tensor.buffer
                    + " holds " + tensor.dataSize + " bytes, but shape " + Text.shape(tensor.shape) + " of "
                    + tensor.typeName() + " needs " + expected);
        }
    }

    private static List<Op> readOps(FlatBufferReader fb, FlatBufferReader.Table graph, int[] opcodes, int tensorCount)
            throws FlatBufferReader.Malformed {
        long[] positions = fb.tables(graph, 3, "subgraph 0", "operators");
        List<Op> ops = new ArrayList<Op>(positions.length);
        for (int index = 0; index < positions.length; index++) {
            String what = "operator " + index;
            FlatBufferReader.Table table = fb.table(positions[index], what);
            long code = fb.scalar(table, 0, 4, 0, what, "opcode_index") & 0xffffffffL;
            if (code >= opcodes.length) {
                throw new FlatBufferReader.Malformed(what + ": opcode index " + code
                        + " is out of range (model has " + opcodes.length + " operator codes)");
            }
            int opcode = opcodes[(int) code];
            String where = what + " (" + opName(opcode) + ")";
            int[] inputs = fb.int32s(table, 1, what, "inputs");
            int[] outputs = fb.int32s(table, 2, what, "outputs");
            for (int input : inputs) { // -1 marks an omitted optional input, never an output
                if (input != -1) {
                    checkIndices(new int[] {input}, tensorCount, where + " input");
                }
            }
            checkIndices(outputs, tensorCount, where + " output");
            ops.add(new Op(index, opcode, inputs, outputs));
        }
        return ops;
    }

    private static void checkIndices(int[] indices, int tensorCount, String what) throws FlatBufferReader.Malformed {
        for (int index : indices) {
            if (index < 0 || index >= tensorCount) {
                throw new FlatBufferReader.Malformed(what + " tensor index " + index
                        + " is out of range (subgraph 0 has " + tensorCount + " tensors)");
            }
        }
    }
}
