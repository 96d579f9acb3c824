package dev.edgepatch.patchloader;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.math.BigInteger;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import org.junit.Test;

/** The header parser: values, and CPython's json messages for what it rejects. */
public class JsonTest {
    private static void assertRejects(String text, String message) {
        try {
            Json.parse(text);
            fail("accepted " + text);
        } catch (Json.ParseException expected) {
            assertEquals(text, message, expected.getMessage());
        }
    }

    @Test
    public void parsesValuesInFileOrder() throws Exception {
        Map<?, ?> object = (Map<?, ?>) Json.parse(" {\"b\": [1, -0, 2.5, 1E5, true, false, null, \"\\u00e9\\n\"], \"a\": {}}\t\r\n");
        assertEquals(Arrays.asList("b", "a"), Arrays.asList(object.keySet().toArray()));
        List<?> array = (List<?>) object.get("b");
        assertEquals(Long.valueOf(1), array.get(0));
        assertEquals(Long.valueOf(0), array.get(1));
        assertEquals(Double.valueOf(2.5), array.get(2));
        assertEquals(Double.valueOf(100000.0), array.get(3));
        assertEquals(Boolean.TRUE, array.get(4));
        assertEquals(Json.NULL, array.get(6));
        assertEquals("\u00e9\n", array.get(7));
    }

    @Test
    public void integersBeyond64BitsAreBigIntegersAndNotInRange() throws Exception {
        Object big = ((List<?>) Json.parse("[123456789012345678901234567890]")).get(0);
        assertEquals(new BigInteger("123456789012345678901234567890"), big);
        assertTrue(!HeaderRules.isInt(big, 0, Long.MAX_VALUE));
        assertEquals(Long.valueOf(Long.MIN_VALUE), ((List<?>) Json.parse("[-9223372036854775808]")).get(0));
        assertTrue(!HeaderRules.isInt(Boolean.TRUE, 0, 1));
        assertTrue(!HeaderRules.isInt(Double.valueOf(1.0), 0, 1));
    }

    @Test
    public void rejectsWithPythonsMessages() {
        assertRejects("", "Expecting value: line 1 column 1 (char 0)");
        assertRejects("{\"a\":1,}", "Expecting property name enclosed in double quotes: line 1 column 8 (char 7)");
        assertRejects("{\"a\" 1}", "Expecting ':' delimiter: line 1 column 6 (char 5)");
        assertRejects("{\"a\":\n  [1,\n  2 3]}", "Expecting ',' delimiter: line 3 column 5 (char 16)");
        assertRejects("[1]\n\n ]", "Extra data: line 3 column 2 (char 6)");
        assertRejects("[\"abc", "Unterminated string starting at: line 1 column 2 (char 1)");
        assertRejects("[\"a\u001fb\"]", "Invalid control character at: line 1 column 4 (char 3)");
        assertRejects("[\"a\\qb\"]", "Invalid \\escape: line 1 column 4 (char 3)");
        assertRejects("[\"\\u12G4\"]", "Invalid \\uXXXX escape: line 1 column 4 (char 3)");
        assertRejects("[-]", "Expecting value: line 1 column 2 (char 1)");
        assertRejects("[1.]", "Expecting ',' delimiter: line 1 column 3 (char 2)");
        assertRejects("\ufeff{}", "Unexpected UTF-8 BOM (decode using utf-8-sig): line 1 column 1 (char 0)");
        assertRejects("[\"\ud83d\ude00\" x]", "Expecting ',' delimiter: line 1 column 6 (char 5)");
    }

    @Test
    public void rejectsWhatTheFormatForbids() {
        assertRejects("{\"a\":1,\"a\":2}", "duplicate key 'a'");
        assertRejects("{\"x\":{\"a\":1,\"a\":2}}", "duplicate key 'a'");
        assertRejects("[NaN]", "non-standard constant NaN");
        assertRejects("[-Infinity]", "non-standard constant -Infinity");
        assertRejects("[1e999]", "number '1e999' overflows a double");
        char[] digits = new char[4301];
        Arrays.fill(digits, '9');
        assertRejects("[" + new String(digits) + "]", "Exceeds the limit (4300 digits) for integer string conversion: "
                + "value has 4301 digits; use sys.set_int_max_str_digits() to increase the limit");
        StringBuilder deep = new StringBuilder();
        for (int i = 0; i <= Json.MAX_DEPTH; i++) {
            deep.append('[');
        }
        assertRejects(deep.toString(), "nested too deeply");
    }

    @Test
    public void textHelpersWriteWhatPythonWrites() {
        assertEquals("\"it's\"", Text.quote("it's"));
        assertEquals("'it\\'s \"q\"'", Text.quote("it's \"q\""));
        assertEquals("'\\x00\\t\\udcff\\xa0\\u200b\\U000f0000\u00e9'",
                Text.quote("\u0000\t\udcff\u00a0\u200b\udb80\udc00\u00e9"));
        assertEquals("[1, 'a', True, None]", Text.show(Arrays.asList(1L, "a", true, Json.NULL)));
        assertEquals(-1, Text.utf8Length("\ud800"));
        assertEquals(4, Text.utf8Length("\ud83d\ude00"));
        assertTrue(Text.compareCodePoints("\ud83d\ude00", "\uffff") > 0); // UTF-16 order would say < 0
    }
}
