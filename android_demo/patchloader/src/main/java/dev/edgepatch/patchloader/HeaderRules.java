package dev.edgepatch.patchloader;

import java.util.ArrayList;
import java.util.Collections;
import java.util.Comparator;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

/** Schema checks on parsed header values, shared by the container and the delta rules. */
final class HeaderRules {
    static final Comparator<String> BY_CODE_POINT = new Comparator<String>() {
        @Override
        public int compare(String a, String b) {
            return Text.compareCodePoints(a, b);
        }
    };

    private HeaderRules() {
    }

    /** An integer (not a boolean, not a fraction) in [low, high]. */
    static boolean isInt(Object value, long low, long high) {
        if (!(value instanceof Long)) {
            return false; // a BigInteger is beyond 64 bits, so outside every range used here
        }
        long number = ((Long) value).longValue();
        return low <= number && number <= high;
    }

    /**
     * {@code obj} is an object with exactly {@code keys}: missing keys are reported in the
     * order of {@code keys}, then unknown keys in sorted order.
     */
    @SuppressWarnings("unchecked")
    static Map<String, Object> checkKeys(Object obj, List<String> keys, String where, String source)
            throws HeaderException {
        if (!(obj instanceof Map)) {
            throw new HeaderException(source + ": " + where + " must be a JSON object, got " + Text.jsonType(obj));
        }
        Map<String, Object> map = (Map<String, Object>) obj;
        for (String key : keys) {
            if (!map.containsKey(key)) {
                throw new HeaderException(source + ": " + where + " is missing key " + Text.quote(key));
            }
        }
        if (map.size() != keys.size()) {
            List<String> unknown = new ArrayList<String>();
            for (String key : map.keySet()) {
                if (!keys.contains(key)) {
                    unknown.add(key);
                }
            }
            Collections.sort(unknown, BY_CODE_POINT);
            throw new HeaderException(source + ": " + where + " has unknown key " + Text.show(unknown.get(0)));
        }
        return map;
    }

    /** A non-empty string of Unicode scalar values (no unpaired surrogate from a JSON escape). */
    static boolean isText(Object value) {
        return value instanceof String && Text.utf8Length((String) value) > 0;
    }

    /** A non-empty array of unique non-empty strings of Unicode scalar text. */
    static List<String> stringList(Object value, String where, String source) throws HeaderException {
        boolean ok = value instanceof List && !((List<?>) value).isEmpty();
        List<String> result = new ArrayList<String>();
        Set<String> seen = new HashSet<String>();
        if (ok) {
            for (Object item : (List<?>) value) {
                if (!isText(item) || !seen.add((String) item)) {
                    ok = false;
                    break;
                }
                result.add((String) item);
            }
        }
        if (!ok) {
            throw new HeaderException(source + ": " + where
                    + " must be a non-empty array of unique non-empty strings, got " + Text.show(value));
        }
        return Collections.unmodifiableList(result);
    }

    /** A finite JSON number (integer or not, never a boolean), as a double. */
    static double finiteNumber(Object value, String where, String source) throws HeaderException {
        double number = Double.NaN;
        if (value instanceof Long) {
            number = ((Long) value).doubleValue();
        } else if (value instanceof Double) {
            number = ((Double) value).doubleValue();
        } else if (value instanceof java.math.BigInteger) {
            number = ((java.math.BigInteger) value).doubleValue(); // finite only up to ~1.8e308
        }
        if (Double.isNaN(number) || Double.isInfinite(number)) {
            throw new HeaderException(source + ": " + where + " must be a finite number, got " + Text.show(value));
        }
        return number;
    }

    /** 64 lowercase hex digits. */
    static boolean isSha256Hex(Object value) {
        if (!(value instanceof String) || ((String) value).length() != 64) {
            return false;
        }
        String text = (String) value;
        for (int i = 0; i < text.length(); i++) {
            char c = text.charAt(i);
            if (!(c >= '0' && c <= '9' || c >= 'a' && c <= 'f')) {
                return false;
            }
        }
        return true;
    }

    /** A string of 1..maxBytes bytes once encoded as UTF-8 (so no unpaired surrogate). */
    static boolean isName(Object value, int maxBytes) {
        if (!(value instanceof String)) {
            return false;
        }
        long bytes = Text.utf8Length((String) value);
        return bytes >= 1 && bytes <= maxBytes;
    }
}
