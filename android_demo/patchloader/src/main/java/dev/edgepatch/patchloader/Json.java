package dev.edgepatch.patchloader;

import java.math.BigInteger;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * A strict RFC 8259 JSON parser for delta headers, with the rejections the format
 * requires: duplicate keys in any object, NaN/Infinity, numbers that overflow a double,
 * control characters in strings, and nesting deeper than {@link #MAX_DEPTH}.
 *
 * <p>Its error messages are those of CPython's {@code json.loads} (as the Python reader
 * configures it), positions included, so both readers describe a broken header alike.
 *
 * <p>Values map to: object - {@code LinkedHashMap<String, Object>} (file order), array -
 * {@code ArrayList<Object>}, string - {@code String}, integer (no fraction, no exponent) -
 * {@code Long} or, beyond 64 bits, {@code BigInteger}, other numbers - {@code Double},
 * {@code true}/{@code false} - {@code Boolean}, {@code null} - {@link #NULL}.
 */
final class Json {
    /** The JSON {@code null} value (a map cannot hold Java null unambiguously). */
    static final Object NULL = new Object() {
        @Override
        public String toString() {
            return "null";
        }
    };

    /** Deepest nesting of arrays and objects accepted; a delta header needs 5. */
    static final int MAX_DEPTH = 512;

    /** Longest integer literal, in digits: CPython's int-conversion limit, so both readers agree. */
    static final int MAX_INT_DIGITS = 4300;

    /** The text is not JSON the reader accepts; the message says why and where. */
    static final class ParseException extends Exception {
        private static final long serialVersionUID = 1L;

        ParseException(String message) {
            super(message);
        }
    }

    private final String text;
    private int pos;
    private int depth;

    private Json(String text) {
        this.text = text;
    }

    /** Parses one JSON text (whitespace allowed around the value). */
    static Object parse(String text) throws ParseException {
        Json parser = new Json(text);
        if (text.startsWith("\ufeff")) {
            throw parser.error("Unexpected UTF-8 BOM (decode using utf-8-sig)", 0);
        }
        parser.skipWhitespace();
        Object value = parser.value();
        parser.skipWhitespace();
        if (parser.pos != text.length()) {
            throw parser.error("Extra data", parser.pos);
        }
        return value;
    }

    /** "msg: line L column C (char P)", P counted in code points as Python counts str indices. */
    private ParseException error(String what, int at) {
        int line = 1;
        int lineStart = 0;
        for (int i = 0; i < at; i++) {
            if (text.charAt(i) == '\n') {
                line++;
                lineStart = i + 1;
            }
        }
        int position = text.codePointCount(0, at);
        int column = position - text.codePointCount(0, lineStart) + 1;
        return new ParseException(what + ": line " + line + " column " + column + " (char " + position + ")");
    }

    private void skipWhitespace() {
        while (pos < text.length()) {
            char c = text.charAt(pos);
            if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
                return;
            }
            pos++;
        }
    }

    private Object value() throws ParseException {
        if (pos >= text.length()) {
            throw error("Expecting value", pos);
        }
        switch (text.charAt(pos)) {
            case '{':
                return object();
            case '[':
                return array();
            case '"':
                return string();
            default:
                return scalar();
        }
    }

    private Object scalar() throws ParseException {
        String[] words = {"null", "true", "false", "NaN", "Infinity", "-Infinity"};
        Object[] values = {NULL, Boolean.TRUE, Boolean.FALSE};
        for (int i = 0; i < words.length; i++) {
            if (text.startsWith(words[i], pos)) {
                if (i >= values.length) {
                    throw new ParseException("non-standard constant " + words[i]);
                }
                pos += words[i].length();
                return values[i];
            }
        }
        char c = text.charAt(pos);
        if (c == '-' || (c >= '0' && c <= '9')) {
            return number();
        }
        throw error("Expecting value", pos);
    }

    private void enter() throws ParseException {
        if (++depth > MAX_DEPTH) {
            throw new ParseException("nested too deeply");
        }
    }

    private Map<String, Object> object() throws ParseException {
        enter();
        pos++; // '{'
        List<String> keys = new ArrayList<String>();
        List<Object> items = new ArrayList<Object>();
        skipWhitespace();
        if (pos < text.length() && text.charAt(pos) == '}') {
            pos++;
            depth--;
            return new LinkedHashMap<String, Object>();
        }
        while (true) {
            if (pos >= text.length() || text.charAt(pos) != '"') {
                throw error("Expecting property name enclosed in double quotes", pos);
            }
            keys.add(string());
            skipWhitespace();
            if (pos >= text.length() || text.charAt(pos) != ':') {
                throw error("Expecting ':' delimiter", pos);
            }
            pos++;
            skipWhitespace();
            items.add(value());
            skipWhitespace();
            if (pos < text.length() && text.charAt(pos) == '}') {
                pos++;
                depth--;
                return checkedObject(keys, items); // duplicates are found once the object is read, as in Python
            }
            if (pos >= text.length() || text.charAt(pos) != ',') {
                throw error("Expecting ',' delimiter", pos);
            }
            pos++;
            skipWhitespace();
        }
    }

    private static Map<String, Object> checkedObject(List<String> keys, List<Object> items) throws ParseException {
        Map<String, Object> result = new LinkedHashMap<String, Object>();
        Set<String> seen = new HashSet<String>();
        for (int i = 0; i < keys.size(); i++) {
            if (!seen.add(keys.get(i))) {
                throw new ParseException("duplicate key " + Text.show(keys.get(i)));
            }
            result.put(keys.get(i), items.get(i));
        }
        return result;
    }

    private List<Object> array() throws ParseException {
        enter();
        pos++; // '['
        List<Object> result = new ArrayList<Object>();
        skipWhitespace();
        if (pos < text.length() && text.charAt(pos) == ']') {
            pos++;
            depth--;
            return result;
        }
        while (true) {
            result.add(value());
            skipWhitespace();
            if (pos < text.length() && text.charAt(pos) == ']') {
                pos++;
                depth--;
                return result;
            }
            if (pos >= text.length() || text.charAt(pos) != ',') {
                throw error("Expecting ',' delimiter", pos);
            }
            pos++;
            skipWhitespace();
        }
    }

    private String string() throws ParseException {
        int start = pos;
        pos++; // opening quote
        StringBuilder out = new StringBuilder();
        while (true) {
            if (pos >= text.length()) {
                throw error("Unterminated string starting at", start);
            }
            char c = text.charAt(pos);
            if (c == '"') {
                pos++;
                return out.toString();
            }
            if (c < 0x20) {
                throw error("Invalid control character at", pos);
            }
            if (c != '\\') {
                out.append(c);
                pos++;
                continue;
            }
            if (pos + 1 >= text.length()) {
                throw error("Unterminated string starting at", start);
            }
            char escape = text.charAt(pos + 1);
            String simple = "\"\\/bfnrt";
            String meaning = "\"\\/\b\f\n\r\t";
            int which = simple.indexOf(escape);
            if (which >= 0) {
                out.append(meaning.charAt(which));
                pos += 2;
            } else if (escape == 'u') {
                out.append(hex4(pos + 2));
                pos += 6;
            } else {
                throw error("Invalid \\escape", pos);
            }
        }
    }

    private char hex4(int at) throws ParseException {
        int value = 0;
        for (int i = 0; i < 4; i++) {
            int digit = at + i < text.length() ? hexDigit(text.charAt(at + i)) : -1;
            if (digit < 0) {
                throw error("Invalid \\uXXXX escape", at - 1);
            }
            value = value * 16 + digit;
        }
        return (char) value;
    }

    private static int hexDigit(char c) {
        if (c >= '0' && c <= '9') {
            return c - '0';
        }
        if (c >= 'a' && c <= 'f') {
            return c - 'a' + 10;
        }
        return c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
    }

    private Object number() throws ParseException {
        int start = pos;
        if (text.charAt(pos) == '-') {
            pos++;
        }
        if (pos >= text.length() || !isDigit(text.charAt(pos))) {
            pos = start;
            throw error("Expecting value", start);
        }
        if (text.charAt(pos) == '0') {
            pos++;
        } else {
            skipDigits();
        }
        boolean integer = true;
        if (pos + 1 < text.length() && text.charAt(pos) == '.' && isDigit(text.charAt(pos + 1))) {
            integer = false;
            pos++;
            skipDigits();
        }
        if (pos < text.length() && (text.charAt(pos) == 'e' || text.charAt(pos) == 'E')) {
            int mark = pos;
            pos++;
            if (pos < text.length() && (text.charAt(pos) == '+' || text.charAt(pos) == '-')) {
                pos++;
            }
            if (pos < text.length() && isDigit(text.charAt(pos))) {
                integer = false;
                skipDigits();
            } else {
                pos = mark; // not an exponent: what follows is reported by the caller
            }
        }
        String literal = text.substring(start, pos);
        return integer ? integer(literal) : real(literal);
    }

    private static Object integer(String literal) throws ParseException {
        int digits = literal.length() - (literal.charAt(0) == '-' ? 1 : 0);
        if (digits > MAX_INT_DIGITS) {
            throw new ParseException("Exceeds the limit (" + MAX_INT_DIGITS + " digits) for integer string conversion: "
                    + "value has " + digits + " digits; use sys.set_int_max_str_digits() to increase the limit");
        }
        if (digits <= 18) {
            return Long.valueOf(Long.parseLong(literal));
        }
        BigInteger big = new BigInteger(literal);
        return big.bitLength() < 64 ? (Object) Long.valueOf(big.longValue()) : big;
    }

    private static Object real(String literal) throws ParseException {
        double value = Double.parseDouble(literal);
        if (Double.isInfinite(value)) {
            throw new ParseException("number " + Text.show(literal) + " overflows a double");
        }
        return Double.valueOf(value);
    }

    private void skipDigits() {
        while (pos < text.length() && isDigit(text.charAt(pos))) {
            pos++;
        }
    }

    private static boolean isDigit(char c) {
        return c >= '0' && c <= '9';
    }
}
