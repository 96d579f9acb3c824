package dev.edgepatch.patchloader;

import static org.junit.Assert.assertEquals;

import org.junit.Test;

/** float16 -> float32 widening, checked for all 65536 bit patterns against the definition. */
public class HalfTest {
    private static double reference(int bits) {
        int sign = (bits & 0x8000) != 0 ? -1 : 1;
        int exponent = (bits >> 10) & 0x1f;
        int mantissa = bits & 0x3ff;
        if (exponent == 0) {
            return sign * Math.scalb((double) mantissa, -24);
        }
        return sign * Math.scalb(1.0 + mantissa / 1024.0, exponent - 15);
    }

    @Test
    public void everyFiniteHalfWidensExactly() {
        for (int bits = 0; bits < 0x10000; bits++) {
            if (!Half.isFinite(bits)) {
                continue;
            }
            float value = Half.toFloat((short) bits);
            assertEquals("bits 0x" + Integer.toHexString(bits), reference(bits), value, 0.0);
            assertEquals("sign of 0x" + Integer.toHexString(bits), (bits & 0x8000) != 0,
                    (Float.floatToRawIntBits(value) & 0x80000000) != 0);
        }
    }

    @Test
    public void nonFiniteHalvesAreRecognised() {
        assertEquals(Float.POSITIVE_INFINITY, Half.toFloat(0x7c00), 0.0);
        assertEquals(Float.NEGATIVE_INFINITY, Half.toFloat((short) 0xfc00), 0.0);
        assertEquals(true, Float.isNaN(Half.toFloat(0x7e00)));
        assertEquals(false, Half.isFinite(0x7c01));
        assertEquals(true, Half.isFinite(0x7bff));
    }
}
