package dev.edgepatch.patchloader;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.HashMap;
import java.util.Map;

/**
 * Bounds-checked reads of FlatBuffer tables, scalars, vectors and strings, as section "Bases"
 * (Reading a .tflite base) of the spec ({@code edgepatch/format/spec.rst}) describes them.
 *
 * <p>A table at position T starts with an i32 s; its vtable is at T - s and holds u16s: its
 * own size, the table's size, then per field id the field's offset from T (0: absent). A
 * reference field at P holds a u32 r; the referenced object is at P + r. A vector or string
 * is a u32 count, then the elements. Every position is checked against the buffer size
 * before it is read; a failure is a {@link Malformed} naming what and where.
 */
final class FlatBufferReader {
    /** The file is inconsistent; the caller adds the file name. */
    static final class Malformed extends Exception {
        private static final long serialVersionUID = 1L;

        Malformed(String message) {
            super(message);
        }
    }

    /** A table: its position and its vtable's field offsets. */
    static final class Table {
        final int pos;
        final int[] slots;

        Table(int pos, int[] slots) {
            this.pos = pos;
            this.slots = slots;
        }

        int slot(int fieldId) {
            return fieldId < slots.length ? slots[fieldId] : 0;
        }
    }

    final ByteBuffer buf;
    final long size;
    private final Map<Long, int[]> vtables = new HashMap<Long, int[]>();

    FlatBufferReader(ByteBuffer buf) {
        this.buf = buf.duplicate().order(ByteOrder.LITTLE_ENDIAN);
        this.size = buf.limit();
    }

    Malformed outside(String what, long pos, long length) {
        return new Malformed(what + " at offset " + pos + " (+" + length + " bytes) is outside the file (" + size
                + " bytes)");
    }

    long u32(long pos) {
        return buf.getInt((int) pos) & 0xffffffffL;
    }

    Table table(long pos, String what) throws Malformed {
        if (pos < 0 || pos + 4 > size) {
            throw outside(what + " table", pos, 4);
        }
        long vtable = pos - buf.getInt((int) pos);
        int[] slots = vtables.get(vtable);
        if (slots == null) {
            slots = readVtable(vtable, what);
            vtables.put(vtable, slots);
        }
        return new Table((int) pos, slots);
    }

    private int[] readVtable(long vtable, String what) throws Malformed {
        if (vtable < 0 || vtable + 4 > size) {
            throw outside(what + " vtable", vtable, 4);
        }
        int vtableSize = buf.getShort((int) vtable) & 0xffff;
        if (vtableSize < 4 || vtableSize % 2 != 0) {
            throw new Malformed(what + " vtable at offset " + vtable + " has invalid size " + vtableSize);
        }
        if (vtable + vtableSize > size) {
            throw outside(what + " vtable", vtable, vtableSize);
        }
        int[] slots = new int[(vtableSize - 4) / 2];
        for (int i = 0; i < slots.length; i++) {
            slots[i] = buf.getShort((int) vtable + 4 + 2 * i) & 0xffff;
        }
        return slots;
    }

    /** A scalar field of {@code width} bytes (1, 4 or 8), little-endian, as stored bits; default when absent. */
    long scalar(Table table, int fieldId, int width, long absent, String what, String field) throws Malformed {
        int offset = table.slot(fieldId);
        if (offset == 0) {
            return absent;
        }
        long pos = (long) table.pos + offset;
        if (pos + width > size) {
            throw outside(what + " " + field, pos, width);
        }
        switch (width) {
            case 1:
                return buf.get((int) pos);
            case 4:
                return buf.getInt((int) pos);
            default:
                return buf.getLong((int) pos);
        }
    }

    /** {position of the first element, element count} of a vector field; {0, 0} when absent. */
    long[] vector(Table table, int fieldId, int itemSize, String what, String field) throws Malformed {
        int offset = table.slot(fieldId);
        if (offset == 0) {
            return new long[] {0, 0};
        }
        long ref = (long) table.pos + offset;
        if (ref + 4 > size) {
            throw outside(what + " " + field + " reference", ref, 4);
        }
        long target = ref + u32(ref);
        if (target + 4 > size) {
            throw outside(what + " " + field, target, 4);
        }
        long count = u32(target);
        if (target + 4 + count * itemSize > size) {
            throw outside(what + " " + field + " (" + count + " elements)", target + 4, count * itemSize);
        }
        return new long[] {target + 4, count};
    }

    int[] int32s(Table table, int fieldId, String what, String field) throws Malformed {
        long[] vector = vector(table, fieldId, 4, what, field);
        int[] values = new int[(int) vector[1]];
        for (int i = 0; i < values.length; i++) {
            values[i] = buf.getInt((int) vector[0] + 4 * i);
        }
        return values;
    }

    String string(Table table, int fieldId, String what, String field) throws Malformed {
        long[] vector = vector(table, fieldId, 1, what, field);
        try {
            return Utf8.decode(buf, (int) vector[0], (int) vector[1]);
        } catch (Utf8.DecodeException error) {
            throw new Malformed(what + " " + field + " at offset " + vector[0] + " is not valid UTF-8");
        }
    }

    /** Position of the table a table field references; -1 when absent. */
    long subtable(Table table, int fieldId, String what, String field) throws Malformed {
        int offset = table.slot(fieldId);
        if (offset == 0) {
            return -1;
        }
        long ref = (long) table.pos + offset;
        if (ref + 4 > size) {
            throw outside(what + " " + field + " reference", ref, 4);
        }
        return ref + u32(ref);
    }

    /** Positions of the tables a vector-of-tables field references. */
    long[] tables(Table table, int fieldId, String what, String field) throws Malformed {
        long[] vector = vector(table, fieldId, 4, what, field);
        long[] positions = new long[(int) vector[1]];
        for (int i = 0; i < positions.length; i++) {
            long at = vector[0] + 4L * i;
            positions[i] = at + u32(at);
        }
        return positions;
    }
}
