package dev.edgepatch.patchloader;

import java.math.BigInteger;
import java.util.Iterator;
import java.util.List;
import java.util.Map;

/** Small helpers that turn values from a file into safe, short message text. */
final class Text {
    private static final int SHOW_LIMIT = 80;
    private static final char[] HEX = "0123456789abcdef".toCharArray();

    private Text() {
    }

    /** A value as Python's repr() would write it, clipped so a hostile header cannot make a huge message. */
    static String show(Object value) {
        String text = repr(value);
        return text.length() <= SHOW_LIMIT ? text : text.substring(0, SHOW_LIMIT - 3) + "...";
    }

    /**
     * A string as Python's repr() writes it: in single quotes, or double quotes when it holds
     * a single quote and no double quote; backslash, {@code \\t \\n \\r} and the quote escaped;
     * non-printable code points as {@code \\xNN}, {@code \\uNNNN} or {@code \\UNNNNNNNN}.
     */
    static String quote(String value) {
        char mark = value.indexOf('\'') >= 0 && value.indexOf('"') < 0 ? '"' : '\'';
        StringBuilder out = new StringBuilder(value.length() + 2).append(mark);
        for (int i = 0; i < value.length(); ) {
            int c = value.codePointAt(i);
            i += Character.charCount(c);
            if (c == mark || c == '\\') {
                out.append('\\').append((char) c);
            } else if (c == '\t') {
                out.append("\\t");
            } else if (c == '\n') {
                out.append("\\n");
            } else if (c == '\r') {
                out.append("\\r");
            } else if (isPrintable(c)) {
                out.appendCodePoint(c);
            } else {
                String prefix = c < 0x100 ? "\\x" : c < 0x10000 ? "\\u" : "\\U";
                int digits = c < 0x100 ? 2 : c < 0x10000 ? 4 : 8;
                for (int shift = 4 * (digits - 1); shift >= 0; shift -= 4) {
                    prefix += HEX[(c >> shift) & 0xf];
                }
                out.append(prefix);
            }
        }
        return out.append(mark).toString();
    }

    /** Python's str.isprintable() for one code point: not Cc, Cf, Cs, Co, Cn, Zl, Zp, nor Zs but space. */
    private static boolean isPrintable(int c) {
        if (c == ' ') {
            return true;
        }
        switch (Character.getType(c)) {
            case Character.CONTROL:
            case Character.FORMAT:
            case Character.SURROGATE:
            case Character.PRIVATE_USE:
            case Character.UNASSIGNED:
            case Character.LINE_SEPARATOR:
            case Character.PARAGRAPH_SEPARATOR:
            case Character.SPACE_SEPARATOR:
                return false;
            default:
                return true;
        }
    }

    private static String repr(Object value) {
        if (value instanceof String) {
            return quote((String) value);
        }
        if (value instanceof Boolean) {
            return ((Boolean) value).booleanValue() ? "True" : "False";
        }
        if (value == Json.NULL || value == null) {
            return "None";
        }
        if (value instanceof List) {
            StringBuilder out = new StringBuilder("[");
            Iterator<?> items = ((List<?>) value).iterator();
            while (items.hasNext() && out.length() <= SHOW_LIMIT) {
                out.append(repr(items.next())).append(items.hasNext() ? ", " : "");
            }
            return out.append(']').toString();
        }
        if (value instanceof Map) {
            StringBuilder out = new StringBuilder("{");
            Iterator<? extends Map.Entry<?, ?>> items = ((Map<?, ?>) value).entrySet().iterator();
            while (items.hasNext() && out.length() <= SHOW_LIMIT) {
                Map.Entry<?, ?> item = items.next();
                out.append(repr(item.getKey())).append(": ").append(repr(item.getValue()));
                out.append(items.hasNext() ? ", " : "");
            }
            return out.append('}').toString();
        }
        return String.valueOf(value);
    }

    /** The JSON type name of a parsed value, for "must be a JSON object, got array". */
    static String jsonType(Object value) {
        if (value instanceof Boolean) {
            return "boolean";
        }
        if (value instanceof Long || value instanceof BigInteger || value instanceof Double) {
            return "number";
        }
        if (value instanceof String) {
            return "string";
        }
        if (value instanceof List) {
            return "array";
        }
        if (value instanceof Map) {
            return "object";
        }
        return "null";
    }

    /** Bytes of {@code value} in UTF-8, or -1 if it holds an unpaired surrogate (not encodable). */
    static long utf8Length(String value) {
        long bytes = 0;
        for (int i = 0; i < value.length(); i++) {
            char c = value.charAt(i);
            if (c < 0x80) {
                bytes += 1;
            } else if (c < 0x800) {
                bytes += 2;
            } else if (Character.isHighSurrogate(c) && i + 1 < value.length()
                    && Character.isLowSurrogate(value.charAt(i + 1))) {
                bytes += 4;
                i++;
            } else if (Character.isSurrogate(c)) {
                return -1;
            } else {
                bytes += 3;
            }
        }
        return bytes;
    }

    /** Compares by Unicode code point, as Python sorts str (String.compareTo uses UTF-16 units). */
    static int compareCodePoints(String a, String b) {
        int i = 0;
        int j = 0;
        while (i < a.length() && j < b.length()) {
            int x = a.codePointAt(i);
            int y = b.codePointAt(j);
            if (x != y) {
                return x < y ? -1 : 1;
            }
            i += Character.charCount(x);
            j += Character.charCount(y);
        }
        if (i < a.length()) {
            return 1;
        }
        return j < b.length() ? -1 : 0;
    }

    /** Lowercase hex of {@code bytes}. */
    static String hex(byte[] bytes) {
        StringBuilder out = new StringBuilder(bytes.length * 2);
        for (byte b : bytes) {
            out.append(HEX[(b >> 4) & 0xf]).append(HEX[b & 0xf]);
        }
        return out.toString();
    }

    /** A list of strings or integers as Python's repr() writes it, unclipped: ['a', 'b'] or [3, 5]. */
    static String list(List<?> items) {
        StringBuilder out = new StringBuilder("[");
        for (Object item : items) {
            out.append(out.length() == 1 ? "" : ", ").append(item instanceof String ? quote((String) item) : item);
        }
        return out.append(']').toString();
    }

    /** A shape as Python prints a list: [3, 3, 8, 1]. */
    static String shape(long[] dims) {
        StringBuilder out = new StringBuilder("[");
        for (int i = 0; i < dims.length; i++) {
            out.append(i == 0 ? "" : ", ").append(dims[i]);
        }
        return out.append(']').toString();
    }

    static String shape(int[] dims) {
        StringBuilder out = new StringBuilder("[");
        for (int i = 0; i < dims.length; i++) {
            out.append(i == 0 ? "" : ", ").append(dims[i]);
        }
        return out.append(']').toString();
    }

    /** Bytes as Python writes a bytes literal, e.g. b'EDGEPTCH' or b'PK\x03\x04'. */
    static String bytesLiteral(byte[] bytes) {
        StringBuilder out = new StringBuilder("b'");
        for (byte b : bytes) {
            int c = b & 0xff;
            if (c == '\'' || c == '\\') {
                out.append('\\').append((char) c);
            } else if (c >= 0x20 && c < 0x7f) {
                out.append((char) c);
            } else {
                out.append("\\x").append(HEX[c >> 4]).append(HEX[c & 0xf]);
            }
        }
        return out.append('\'').toString();
    }
}
