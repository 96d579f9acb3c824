package dev.edgepatch.patchloader;

import java.util.List;

/**
 * Value bounds of an int8 delta (section "int8 delta" of {@code edgepatch/format/spec.rst}): scales finite
 * in MIN_QUANT_SCALE..MAX_QUANT_SCALE, zero points in the int8 range, and (on apply) an activation's scale
 * within MAX_ACTIVATION_SCALE_RATIO of the base's.
 */
final class Int8Limits {
    static final double MIN_QUANT_SCALE = 1e-15;
    static final double MAX_QUANT_SCALE = 1e6;
    static final double MAX_ACTIVATION_SCALE_RATIO = 64;
    static final int MIN_ZERO_POINT = -128;
    static final int MAX_ZERO_POINT = 127;

    private Int8Limits() {
    }

    /** A float32 in MIN_QUANT_SCALE..MAX_QUANT_SCALE, compared as a double (NaN and Inf are not). */
    static boolean inBounds(float scale) {
        double value = scale;
        return value >= MIN_QUANT_SCALE && value <= MAX_QUANT_SCALE;
    }

    /** The reader's rule: every scale in bounds (NonFiniteException), then every zero point int8 (HeaderException). */
    static void checkQuantValues(List<Int8Delta.Quant> quant, int[] scaleBits, int[] zeroPoints, String source)
            throws EdgepatchException {
        for (int i = 0; i < scaleBits.length; i++) {
            if (!inBounds(Float.intBitsToFloat(scaleBits[i]))) {
                throw new NonFiniteException(source + ": scale[" + i + "] (tensor " + owner(quant, i, true)
                        + ") must be finite and in 1e-15..1e6");
            }
        }
        for (int i = 0; i < zeroPoints.length; i++) {
            if (zeroPoints[i] < MIN_ZERO_POINT || zeroPoints[i] > MAX_ZERO_POINT) {
                throw new HeaderException(source + ": zero_point[" + i + "] (tensor " + owner(quant, i, false) + ") is "
                        + zeroPoints[i] + ", outside the int8 range -128..127");
            }
        }
    }

    private static long owner(List<Int8Delta.Quant> quant, int position, boolean scales) {
        long left = position;
        for (Int8Delta.Quant entry : quant) {
            int count = scales ? entry.scales : entry.zeroPoints;
            if (left < count) {
                return entry.index;
            }
            left -= count;
        }
        throw new IllegalStateException("position past the quant sums");
    }

    /** An activation's new scale within 1/64..64 times the base's (ratio computed in doubles). */
    static boolean ratioInBounds(float task, float base) {
        double ratio = (double) task / (double) base;
        return ratio <= MAX_ACTIVATION_SCALE_RATIO && ratio >= 1 / MAX_ACTIVATION_SCALE_RATIO;
    }
}
