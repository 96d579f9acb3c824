package dev.edgepatch.patchloader;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import java.nio.ShortBuffer;
import java.util.List;
import java.util.Map;

/** A verified file of the edgepatch tensor format: its meta object and tensor entries. */
final class TensorFile {
    /** One tensor entry of the header, checked against the payload. */
    static final class Entry {
        final String name;
        final String dtype;
        final long[] shape;
        final int offset; // relative to the payload start
        final int nbytes;

        Entry(String name, String dtype, long[] shape, int offset, int nbytes) {
            this.name = name;
            this.dtype = dtype;
            this.shape = shape;
            this.offset = offset;
            this.nbytes = nbytes;
        }
    }

    final String kind; // file_kind
    final int version; // the format version of the file (1 or 2)
    final Map<String, Object> meta;
    final List<Entry> entries;
    private final ByteBuffer data; // the whole file, little-endian
    private final int payloadStart;

    TensorFile(String kind, int version, Map<String, Object> meta, List<Entry> entries, ByteBuffer data,
            int payloadStart) {
        this.kind = kind;
        this.version = version;
        this.meta = meta;
        this.entries = entries;
        this.data = data;
        this.payloadStart = payloadStart;
    }

    /** The tensor's bytes as a little-endian buffer of its own. */
    ByteBuffer bytes(Entry entry) {
        ByteBuffer view = data.duplicate();
        view.position(payloadStart + entry.offset);
        view.limit(payloadStart + entry.offset + entry.nbytes);
        return view.slice().order(ByteOrder.LITTLE_ENDIAN);
    }

    /** A float tensor's values as float32 (float16 is widened exactly). */
    float[] floats(Entry entry) {
        if (DeltaFormat.FLOAT32.equals(entry.dtype)) {
            FloatBuffer values = bytes(entry).asFloatBuffer();
            float[] out = new float[values.remaining()];
            values.get(out);
            return out;
        }
        if (!DeltaFormat.FLOAT16.equals(entry.dtype)) {
            throw new IllegalStateException("tensor " + entry.name + " is " + entry.dtype + ", not a float");
        }
        ShortBuffer values = bytes(entry).asShortBuffer();
        float[] out = new float[values.remaining()];
        for (int i = 0; i < out.length; i++) {
            out[i] = Half.toFloat(values.get(i));
        }
        return out;
    }
}
