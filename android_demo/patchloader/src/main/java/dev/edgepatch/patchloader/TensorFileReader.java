package dev.edgepatch.patchloader;

import java.math.BigInteger;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.IntBuffer;
import java.nio.ShortBuffer;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * Steps 2 to 10 of the format's verification order (spec {@code edgepatch/format/spec.rst},
 * sections "Container" and "Verification order"):
 * sizes, magic, version, header length, payload size, SHA-256 trailer, header schema,
 * zero padding and finite floats. It stops at the first failure with the class the
 * specification names for it.
 */
final class TensorFileReader {
    private TensorFileReader() {
    }

    /**
     * Verifies a whole file held in memory: the bytes between {@code input}'s position and
     * limit. Tensor data is not copied.
     */
    static TensorFile decode(ByteBuffer input, String expectKind, String source) throws EdgepatchException {
        return decode(input, DeltaFormat.list(expectKind), source);
    }

    /** As {@link #decode(ByteBuffer, String, String)}, for a file that may be any of {@code expectKinds}. */
    static TensorFile decode(ByteBuffer input, List<String> expectKinds, String source) throws EdgepatchException {
        ByteBuffer data = input.slice().order(ByteOrder.LITTLE_ENDIAN);
        int size = data.remaining();
        checkFileSize(size, source);
        int headerLen = checkPreamble(data, size, source);
        int start = DeltaFormat.PREAMBLE_BYTES + headerLen;
        Object header = null;
        String parseError = null;
        try {
            header = Json.parse(Utf8.decode(data, DeltaFormat.PREAMBLE_BYTES, headerLen));
        } catch (Utf8.DecodeException error) {
            parseError = "header is not valid UTF-8: " + error.getMessage();
        } catch (Json.ParseException error) {
            parseError = "header is not valid JSON: " + error.getMessage();
        }
        if (header instanceof Map) {
            Object payload = ((Map<?, ?>) header).get("payload_bytes");
            if (HeaderRules.isInt(payload, 0, DeltaFormat.MAX_FILE_BYTES)) {
                checkTotalSize(size, headerLen, ((Long) payload).longValue(), source);
            }
        }
        checkTrailer(data, source);
        if (parseError != null) {
            throw new HeaderException(source + ": " + parseError);
        }
        Map<String, Object> fields = HeaderRules.checkKeys(header, DeltaFormat.HEADER_KEYS, "header", source);
        List<TensorFile.Entry> entries = checkHeader(fields, expectKinds, source);
        int payloadBytes = (int) ((Long) fields.get("payload_bytes")).longValue();
        checkPadding(data, start, payloadBytes, entries, source);
        @SuppressWarnings("unchecked")
        Map<String, Object> meta = (Map<String, Object>) fields.get("meta");
        TensorFile file = new TensorFile((String) fields.get("file_kind"), data.getInt(8), meta, entries, data, start);
        for (TensorFile.Entry entry : entries) {
            checkFinite(file, entry, source);
        }
        return file;
    }

    static void checkFileSize(long size, String source) throws EdgepatchException {
        if (size < DeltaFormat.MIN_FILE_BYTES) {
            throw new TruncatedFileException(source + ": file is " + size
                    + " bytes, shorter than the smallest valid file (" + DeltaFormat.MIN_FILE_BYTES + " bytes)");
        }
        if (size > DeltaFormat.MAX_FILE_BYTES) {
            throw new DeltaFormatException(source + ": file is " + size
                    + " bytes, larger than MAX_FILE_BYTES (" + DeltaFormat.MAX_FILE_BYTES + ")");
        }
    }

    /**
     * The reading gate of a file of {@code size} bytes (spec, verification step 2): given the bytes read so far
     * (the first {@code filled} of {@code data}), checks what they allow and says how many more bytes to read
     * before the next call, 0 when the rest may be read. The 16 preamble bytes, then the header, then the rest
     * only if the header promises the size the file has; a header that does not parse waits for the checksum.
     */
    static int nextToRead(byte[] data, int filled, long size, String source) throws EdgepatchException {
        if (filled < DeltaFormat.PREAMBLE_BYTES) {
            return DeltaFormat.PREAMBLE_BYTES - filled;
        }
        ByteBuffer head = ByteBuffer.wrap(data, 0, filled).order(ByteOrder.LITTLE_ENDIAN);
        int headerLen = checkPreamble(head, size, source);
        if (filled < DeltaFormat.PREAMBLE_BYTES + headerLen) {
            return DeltaFormat.PREAMBLE_BYTES + headerLen - filled;
        }
        Object header;
        try {
            header = Json.parse(Utf8.decode(head, DeltaFormat.PREAMBLE_BYTES, headerLen));
        } catch (Utf8.DecodeException | Json.ParseException error) {
            return 0;
        }
        if (header instanceof Map) {
            Object payload = ((Map<?, ?>) header).get("payload_bytes");
            if (HeaderRules.isInt(payload, 0, DeltaFormat.MAX_FILE_BYTES)) {
                checkTotalSize(size, headerLen, ((Long) payload).longValue(), source);
            }
        }
        return 0;
    }

    private static int checkPreamble(ByteBuffer data, long size, String source) throws EdgepatchException {
        byte[] magic = new byte[8];
        for (int i = 0; i < magic.length; i++) {
            magic[i] = data.get(i);
        }
        if (!Arrays.equals(magic, DeltaFormat.MAGIC)) {
            throw new DeltaFormatException(source + ": bad magic: expected "
                    + Text.bytesLiteral(DeltaFormat.MAGIC) + ", got " + Text.bytesLiteral(magic));
        }
        long version = data.getInt(8) & 0xffffffffL;
        boolean readable = false;
        StringBuilder expected = new StringBuilder();
        for (long known : DeltaFormat.READABLE_VERSIONS) {
            readable |= version == known;
            expected.append(expected.length() == 0 ? "" : " or ").append(known);
        }
        if (!readable) {
            throw new DeltaFormatException(source + ": unsupported format version: expected "
                    + expected + ", got " + version);
        }
        long headerLen = data.getInt(12) & 0xffffffffL;
        if (headerLen < DeltaFormat.MIN_HEADER_BYTES || headerLen > DeltaFormat.MAX_HEADER_BYTES) {
            throw new HeaderException(source + ": header_len " + headerLen + " is outside "
                    + DeltaFormat.MIN_HEADER_BYTES + ".." + DeltaFormat.MAX_HEADER_BYTES);
        }
        if (headerLen % DeltaFormat.HEADER_ALIGN != 0) {
            throw new HeaderException(source + ": header_len " + headerLen + " is not a multiple of "
                    + DeltaFormat.HEADER_ALIGN);
        }
        long needed = DeltaFormat.PREAMBLE_BYTES + headerLen + DeltaFormat.TRAILER_BYTES;
        if (size < needed) {
            throw new TruncatedFileException(source + ": file is " + size
                    + " bytes, too short for header_len " + headerLen + " (needs at least " + needed + ")");
        }
        return (int) headerLen;
    }

    private static void checkTotalSize(long size, int headerLen, long payloadBytes, String source)
            throws EdgepatchException {
        long expected = DeltaFormat.PREAMBLE_BYTES + headerLen + payloadBytes + DeltaFormat.TRAILER_BYTES;
        String detail = "file is " + size + " bytes, expected " + expected + " = 16 + header_len " + headerLen
                + " + payload_bytes " + payloadBytes + " + 32";
        if (size < expected) {
            throw new TruncatedFileException(source + ": truncated: " + detail);
        }
        if (size > expected) {
            throw new DeltaFormatException(source + ": " + (size - expected) + " unexpected trailing bytes: " + detail);
        }
    }

    static MessageDigest sha256() {
        try {
            return MessageDigest.getInstance("SHA-256");
        } catch (NoSuchAlgorithmException error) {
            throw new IllegalStateException("this JVM has no SHA-256", error); // every Java and Android has it
        }
    }

    private static void checkTrailer(ByteBuffer data, String source) throws ChecksumMismatchException {
        int end = data.remaining() - DeltaFormat.TRAILER_BYTES;
        ByteBuffer content = data.duplicate();
        content.limit(end);
        MessageDigest digest = sha256();
        digest.update(content);
        byte[] stored = new byte[DeltaFormat.TRAILER_BYTES];
        for (int i = 0; i < stored.length; i++) {
            stored[i] = data.get(end + i);
        }
        byte[] actual = digest.digest();
        if (!MessageDigest.isEqual(stored, actual)) {
            throw new ChecksumMismatchException(source + ": sha256 mismatch: trailer says " + Text.hex(stored)
                    + ", content hashes to " + Text.hex(actual));
        }
    }

    /** Steps 7 and 8: the header's schema; returns the tensor entries. */
    private static List<TensorFile.Entry> checkHeader(Map<String, Object> header, List<String> expectKinds,
            String source) throws HeaderException {
        Object kind = header.get("file_kind");
        if (!DeltaFormat.FILE_KINDS.contains(kind)) {
            throw new HeaderException(source + ": file_kind must be one of "
                    + DeltaFormat.joined(DeltaFormat.FILE_KINDS) + ", got " + Text.show(kind));
        }
        if (!expectKinds.contains(kind)) {
            String expected = expectKinds.size() == 1 ? Text.quote(expectKinds.get(0))
                    : "one of " + DeltaFormat.joined(expectKinds);
            throw new HeaderException(source + ": file_kind: expected " + expected + ", got "
                    + Text.quote((String) kind));
        }
        Object payloadBytes = header.get("payload_bytes");
        if (!HeaderRules.isInt(payloadBytes, 0, DeltaFormat.MAX_FILE_BYTES)) {
            throw new HeaderException(source + ": payload_bytes must be an integer in 0.." + DeltaFormat.MAX_FILE_BYTES
                    + ", got " + Text.show(payloadBytes));
        }
        if (!(header.get("meta") instanceof Map)) {
            throw new HeaderException(source + ": meta must be a JSON object, got " + Text.jsonType(header.get("meta")));
        }
        Object tensors = header.get("tensors");
        if (!(tensors instanceof List)) {
            throw new HeaderException(source + ": tensors must be a JSON array, got " + Text.jsonType(tensors));
        }
        List<?> items = (List<?>) tensors;
        if (items.size() > DeltaFormat.MAX_TENSORS) {
            throw new HeaderException(source + ": " + items.size() + " tensors, more than MAX_TENSORS ("
                    + DeltaFormat.MAX_TENSORS + ")");
        }
        return checkEntries(items, ((Long) payloadBytes).longValue(), source);
    }

    private static List<TensorFile.Entry> checkEntries(List<?> items, long payloadBytes, String source)
            throws HeaderException {
        List<TensorFile.Entry> entries = new ArrayList<TensorFile.Entry>(items.size());
        Set<String> seen = new HashSet<String>();
        String previous = null;
        long previousEnd = 0;
        for (int index = 0; index < items.size(); index++) {
            Map<String, Object> item = HeaderRules.checkKeys(items.get(index), DeltaFormat.TENSOR_KEYS,
                    "tensors[" + index + "]", source);
            Object name = item.get("name");
            if (!HeaderRules.isName(name, DeltaFormat.MAX_NAME_BYTES)) {
                throw new HeaderException(source + ": tensors[" + index + "].name must be a string of 1.."
                        + DeltaFormat.MAX_NAME_BYTES + " UTF-8 bytes, got " + Text.show(name));
            }
            if (!seen.add((String) name)) {
                throw new HeaderException(source + ": duplicate tensor name " + Text.quote((String) name));
            }
            String where = "tensor " + Text.quote((String) name);
            TensorFile.Entry entry = checkEntryNumbers((String) name, item, where, source);
            long end = (long) entry.offset + entry.nbytes;
            if (entry.offset % DeltaFormat.ALIGN != 0) {
                throw new HeaderException(source + ": " + where + ": offset " + entry.offset
                        + " is not a multiple of ALIGN (" + DeltaFormat.ALIGN + ")");
            }
            if (entry.offset < previousEnd) {
                throw new HeaderException(source + ": " + where + ": offset " + entry.offset
                        + " is before the end of the previous tensor " + Text.quote(previous) + " (" + previousEnd
                        + "); tensors must be sorted by offset and must not overlap");
            }
            if (end > payloadBytes) {
                throw new HeaderException(source + ": " + where + ": bytes " + entry.offset + ".." + end
                        + " run past payload_bytes (" + payloadBytes + ")");
            }
            entries.add(entry);
            previous = entry.name;
            previousEnd = end;
        }
        return entries;
    }

    private static TensorFile.Entry checkEntryNumbers(String name, Map<String, Object> item, String where,
            String source) throws HeaderException {
        Object dtype = item.get("dtype");
        if (!DeltaFormat.DTYPES.contains(dtype)) {
            throw new HeaderException(source + ": " + where + ": dtype must be one of float32, float16, int32, "
                    + "int8, uint8, got " + Text.show(dtype));
        }
        Object shapeValue = item.get("shape");
        long[] shape = shape(shapeValue);
        if (shape == null) {
            throw new HeaderException(source + ": " + where + ": shape must be an array of at most "
                    + DeltaFormat.MAX_RANK + " integers in 0.." + DeltaFormat.MAX_FILE_BYTES + ", got "
                    + Text.show(shapeValue));
        }
        for (String key : new String[] {"offset", "nbytes"}) {
            if (!HeaderRules.isInt(item.get(key), 0, DeltaFormat.MAX_FILE_BYTES)) {
                throw new HeaderException(source + ": " + where + ": " + key + " must be an integer in 0.."
                        + DeltaFormat.MAX_FILE_BYTES + ", got " + Text.show(item.get(key)));
            }
        }
        BigInteger elements = BigInteger.ONE;
        for (long dim : shape) {
            elements = elements.multiply(BigInteger.valueOf(Math.max(dim, 1)));
        }
        if (elements.compareTo(BigInteger.valueOf(DeltaFormat.MAX_TENSOR_ELEMENTS)) > 0) {
            throw new HeaderException(source + ": " + where + ": shape " + Text.shape(shape) + " has " + elements
                    + " elements (zero dimensions counted as 1), more than MAX_TENSOR_ELEMENTS ("
                    + DeltaFormat.MAX_TENSOR_ELEMENTS + ")");
        }
        long nbytes = ((Long) item.get("nbytes")).longValue();
        BigInteger needed = BigInteger.valueOf(DeltaFormat.itemSize((String) dtype));
        for (long dim : shape) {
            needed = needed.multiply(BigInteger.valueOf(dim));
        }
        if (!needed.equals(BigInteger.valueOf(nbytes))) {
            throw new HeaderException(source + ": " + where + ": nbytes is " + nbytes + ", but shape "
                    + Text.shape(shape) + " of " + dtype + " needs " + needed);
        }
        int offset = (int) ((Long) item.get("offset")).longValue();
        return new TensorFile.Entry(name, (String) dtype, shape, offset, (int) nbytes);
    }

    /** The shape as longs, or null if it is not an array of at most MAX_RANK integers in range. */
    private static long[] shape(Object value) {
        if (!(value instanceof List) || ((List<?>) value).size() > DeltaFormat.MAX_RANK) {
            return null;
        }
        List<?> dims = (List<?>) value;
        long[] shape = new long[dims.size()];
        for (int i = 0; i < shape.length; i++) {
            if (!HeaderRules.isInt(dims.get(i), 0, DeltaFormat.MAX_FILE_BYTES)) {
                return null;
            }
            shape[i] = ((Long) dims.get(i)).longValue();
        }
        return shape;
    }

    private static void checkPadding(ByteBuffer data, int start, int payloadBytes, List<TensorFile.Entry> entries,
            String source) throws DeltaFormatException {
        int position = 0;
        for (int i = 0; i <= entries.size(); i++) {
            int gapEnd = i < entries.size() ? entries.get(i).offset : payloadBytes;
            for (int at = position; at < gapEnd; at++) {
                int value = data.get(start + at) & 0xff;
                if (value != 0) {
                    throw new DeltaFormatException(source + ": payload byte " + at + " is 0x"
                            + Text.hex(new byte[] {(byte) value}) + ", expected 0x00 (bytes outside tensors must be zero)");
                }
            }
            if (i < entries.size()) {
                position = entries.get(i).offset + entries.get(i).nbytes;
            }
        }
    }

    private static void checkFinite(TensorFile file, TensorFile.Entry entry, String source) throws NonFiniteException {
        if (!DeltaFormat.isFloat(entry.dtype)) {
            return;
        }
        long nans = 0;
        long infs = 0;
        long first = -1;
        if (DeltaFormat.FLOAT32.equals(entry.dtype)) {
            IntBuffer bits = file.bytes(entry).asIntBuffer();
            for (int i = 0; i < bits.limit(); i++) {
                int value = bits.get(i);
                if ((value & 0x7f800000) == 0x7f800000) {
                    first = first < 0 ? i : first;
                    if ((value & 0x007fffff) != 0) {
                        nans++;
                    } else {
                        infs++;
                    }
                }
            }
        } else {
            ShortBuffer bits = file.bytes(entry).asShortBuffer();
            for (int i = 0; i < bits.limit(); i++) {
                int value = bits.get(i);
                if (!Half.isFinite(value)) {
                    first = first < 0 ? i : first;
                    if ((value & 0x3ff) != 0) {
                        nans++;
                    } else {
                        infs++;
                    }
                }
            }
        }
        if (first >= 0) {
            throw new NonFiniteException(source + ": tensor " + Text.quote(entry.name) + " holds " + nans + " NaN and "
                    + infs + " Inf values (first at flat index " + first + ")");
        }
    }
}
