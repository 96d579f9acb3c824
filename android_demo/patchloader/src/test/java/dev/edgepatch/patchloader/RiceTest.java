package dev.edgepatch.patchloader;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.fail;

import java.math.BigInteger;
import java.util.ArrayList;
import java.util.List;
import org.junit.Test;

/** Golomb-Rice decoding of hand-made bit strings (spec: section <i>Golomb-Rice codes</i> of {@code edgepatch/format/spec.rst}), and its errors. */
public class RiceTest {
    private static List<BigInteger> counts(long... values) {
        List<BigInteger> out = new ArrayList<BigInteger>();
        for (long value : values) {
            out.add(BigInteger.valueOf(value));
        }
        return out;
    }

    /** Bytes from a string of '0'/'1' (spaces ignored), the last byte padded with 0 bits. */
    private static byte[] bits(String text) {
        String digits = text.replace(" ", "");
        byte[] out = new byte[(digits.length() + 7) / 8];
        for (int i = 0; i < digits.length(); i++) {
            if (digits.charAt(i) == '1') {
                out[i / 8] |= (byte) (0x80 >> (i % 8));
            }
        }
        return out;
    }

    private static String error(byte[] data, List<BigInteger> counts, int... ks) {
        try {
            Rice.decode(data, counts, ks);
        } catch (Rice.RiceException expected) {
            return expected.getMessage();
        }
        fail("decoded");
        return null;
    }

    @Test
    public void decodesRemaindersFirstThenUnaryQuotients() throws Exception {
        // k=0: 0, -1, 1, 2 map to u = 0, 1, 2, 4: unary 0 10 110 11110
        assertArrayEquals(new short[] {0, -1, 1, 2}, Rice.decode(bits("0 10 110 11110"), counts(4), new int[] {0}));
        // k=2: 5 (u=10: r=2, q=2) and -3 (u=5: r=1, q=1); then a k=1 run: 0 (u=0)
        assertArrayEquals(new short[] {5, -3, 0}, Rice.decode(bits("10 01 110 10" + "0 0"), counts(2, 1),
                new int[] {2, 1}));
        // int16 extremes with k=15: 32767 is u=65534 (r=32766, q=1), -32768 is u=65535 (r=32767, q=1)
        assertArrayEquals(new short[] {32767, -32768}, Rice.decode(bits("111111111111110 111111111111111 10 10"),
                counts(2), new int[] {15}));
    }

    @Test
    public void rejectsWhatPythonRejects() {
        assertEquals("3 values cannot fit in 0 bytes", error(new byte[0], counts(3), 0));
        assertEquals("parameter k=16 is outside 0..15", error(bits("0"), counts(1), 16));
        assertEquals("the bits end inside a run's remainders", error(bits("0"), counts(1), 9));
        assertEquals("the bits end inside a run's quotients", error(new byte[] {(byte) 0xff}, counts(1), 0));
        assertEquals("a value is outside int16", error(bits("000000000000000 110"), counts(1), 15));
        assertEquals("7 bits are left over after the last value", error(bits("0 0000001"), counts(1), 0));
        assertEquals("15 bits are left over after the last value", error(bits("0 0000000 00000000"), counts(1), 0));
        assertEquals("18446744073709551616 values cannot fit in 1 bytes",
                error(bits("0"), counts(Long.MAX_VALUE, Long.MAX_VALUE, 2), 0, 0, 0));
    }
}
