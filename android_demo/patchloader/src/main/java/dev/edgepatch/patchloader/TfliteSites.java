package dev.edgepatch.patchloader;

import java.util.ArrayList;
import java.util.Collections;
import java.util.Comparator;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * Finds the base's patch sites by walking its ops: section "Bases" (TFLite) of the spec
 * ({@code edgepatch/format/spec.rst}). A CONV_2D, DEPTHWISE_CONV_2D or FULLY_CONNECTED op
 * whose input 1 is named as a site's kernel and input 2 as its bias ({@link TensorNames}).
 * Names are exact keys set by {@code edgepatch convert}, never substrings. Each site
 * tensor must be float32 constant data read by that one op input, and its bytes must
 * belong to no other tensor (the converter deduplicates equal constants).
 */
final class TfliteSites {
    /** Where one float32 tensor lives in the base file. */
    static final class Slot {
        final int offset;
        final int[] shape;
        final int count;

        Slot(int offset, int[] shape, int count) {
            this.offset = offset;
            this.shape = shape;
            this.count = count;
        }
    }

    /** One site of the base: its op ({@code conv}, {@code depthwise}, {@code dense}), kernel and bias. */
    static final class Site {
        final String op;
        final Slot kernel;
        final Slot bias;

        Site(String op, Slot kernel, Slot bias) {
            this.op = op;
            this.kernel = kernel;
            this.bias = bias;
        }
    }

    private TfliteSites() {
    }

    static String siteOp(int opcode) {
        switch (opcode) {
            case TfliteModel.CONV_2D:
                return "conv";
            case TfliteModel.DEPTHWISE_CONV_2D:
                return "depthwise";
            case TfliteModel.FULLY_CONNECTED:
                return "dense";
            default:
                return null;
        }
    }

    /** Site name to its slots, in op order. */
    static Map<String, Site> index(TfliteModel model, String source) throws BaseModelException {
        Map<String, Site> sites = new LinkedHashMap<String, Site>();
        Map<Integer, Integer> readers = inputReaders(model);
        Set<Integer> siteTensors = new HashSet<Integer>();
        for (TfliteModel.Op op : model.ops) {
            String siteOp = siteOp(op.opcode);
            if (siteOp == null || op.inputs.length < 3 || Math.min(op.inputs[1], op.inputs[2]) < 0) {
                continue;
            }
            String kernelName = model.tensors.get(op.inputs[1]).name;
            String site = TensorNames.siteOf(kernelName, TensorNames.KERNEL);
            if (site == null) {
                continue;
            }
            String biasName = model.tensors.get(op.inputs[2]).name;
            require(biasName.equals(TensorNames.of(site, TensorNames.BIAS)), source + ": op " + op.index + " has kernel '" + kernelName
                    + "' but bias '" + biasName + "'");
            require(!sites.containsKey(site), source + ": site `" + site + "` appears on two ops");
            Slot kernel = floatSlot(model, op.inputs[1], readers, source);
            Slot bias = floatSlot(model, op.inputs[2], readers, source);
            sites.put(site, new Site(siteOp, kernel, bias));
            siteTensors.add(op.inputs[1]);
            siteTensors.add(op.inputs[2]);
        }
        require(!sites.isEmpty(), source + ": no edgepatch sites found; was it written by `edgepatch convert`?");
        checkPrivateBytes(model, siteTensors, source);
        return Collections.unmodifiableMap(sites);
    }

    private static Map<Integer, Integer> inputReaders(TfliteModel model) {
        Map<Integer, Integer> counts = new HashMap<Integer, Integer>();
        for (TfliteModel.Op op : model.ops) {
            for (int index : op.inputs) {
                Integer count = counts.get(index);
                counts.put(index, count == null ? 1 : count + 1);
            }
        }
        return counts;
    }

    private static Slot floatSlot(TfliteModel model, int index, Map<Integer, Integer> readers, String source)
            throws BaseModelException {
        TfliteModel.Tensor tensor = model.tensors.get(index);
        require(tensor.type == TfliteModel.FLOAT32, source + ": tensor '" + tensor.name + "' is " + tensor.typeName()
                + ", expected float32");
        require(tensor.dataOffset >= 0, source + ": tensor '" + tensor.name + "' has no constant data");
        Integer count = readers.get(index);
        int readCount = count == null ? 0 : count;
        require(readCount == 1, source + ": tensor '" + tensor.name + "' is read by " + readCount + " op inputs");
        // The data size was checked against the shape when the file was read, so these fit an int.
        return new Slot((int) tensor.dataOffset, tensor.shape.clone(), (int) (tensor.dataSize / 4));
    }

    /** No site tensor's bytes may overlap another tensor's (shared buffers, aliased offsets). */
    private static void checkPrivateBytes(TfliteModel model, Set<Integer> siteTensors, String source)
            throws BaseModelException {
        List<long[]> spans = new ArrayList<long[]>();
        for (TfliteModel.Tensor tensor : model.tensors) {
            if (tensor.dataOffset >= 0 && tensor.dataSize > 0) {
                spans.add(new long[] {tensor.dataOffset, tensor.dataOffset + tensor.dataSize, tensor.index});
            }
        }
        Collections.sort(spans, new Comparator<long[]>() {
            @Override
            public int compare(long[] a, long[] b) {
                for (int i = 0; i < 3; i++) {
                    if (a[i] != b[i]) {
                        return a[i] < b[i] ? -1 : 1;
                    }
                }
                return 0;
            }
        });
        long reachEnd = -1;
        int reachIndex = -1;
        for (long[] span : spans) {
            int index = (int) span[2];
            if (span[0] < reachEnd && (siteTensors.contains(index) || siteTensors.contains(reachIndex))) {
                throw new BaseModelException(source + ": tensors '" + model.tensors.get(reachIndex).name + "' and '"
                        + model.tensors.get(index).name + "' share data bytes");
            }
            if (span[1] > reachEnd) {
                reachEnd = span[1];
                reachIndex = index;
            }
        }
    }

    private static void require(boolean condition, String message) throws BaseModelException {
        if (!condition) {
            throw new BaseModelException(message);
        }
    }
}
