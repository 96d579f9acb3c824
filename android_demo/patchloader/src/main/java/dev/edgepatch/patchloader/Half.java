package dev.edgepatch.patchloader;

/** IEEE 754 binary16 to binary32, exactly (as numpy's {@code astype(np.float32)}). */
final class Half {
    private static final float TWO_POW_MINUS_24 = Float.intBitsToFloat((127 - 24) << 23);

    private Half() {
    }

    static boolean isFinite(int bits) {
        return (bits & 0x7c00) != 0x7c00;
    }

    static float toFloat(int bits) {
        int sign = (bits & 0x8000) << 16;
        int exponent = (bits >>> 10) & 0x1f;
        int mantissa = bits & 0x3ff;
        if (exponent == 0x1f) {
            return Float.intBitsToFloat(sign | 0x7f800000 | (mantissa << 13));
        }
        if (exponent == 0) { // zero or subnormal: mantissa * 2^-24, exact in binary32
            float magnitude = mantissa * TWO_POW_MINUS_24;
            return Float.intBitsToFloat(sign | Float.floatToRawIntBits(magnitude));
        }
        return Float.intBitsToFloat(sign | ((exponent + 127 - 15) << 23) | (mantissa << 13));
    }
}
