package dev.edgepatch.patchloader;

import java.math.BigInteger;
import java.util.List;

/**
 * Decodes Golomb-Rice runs of int16 values, the int8 delta's refold codes: section
 * "Golomb-Rice codes" of the spec ({@code edgepatch/format/spec.rst}), with its checks in its
 * order and the Python decoder's messages.
 *
 * <p>A run of {@code n} values with parameter {@code k} (0..15) is {@code n} remainders of
 * {@code k} bits each (most significant first), then {@code n} quotients in unary (that many
 * 1 bits, then a 0 bit); the mapped value {@code u = (quotient << k) | remainder} is
 * {@code 2v} for {@code v >= 0} and {@code -2v - 1} otherwise. Runs follow each other bit by
 * bit, each byte filled from its most significant bit; only the last byte's padding may be
 * left over, and it must be 0 bits.
 */
final class Rice {
    static final int MAX_K = 15;
    static final long MAX_UNSIGNED = 0xFFFF;
    /** Most values this loader decodes in one stream: a Java array's limit. */
    static final long MAX_VALUES = Integer.MAX_VALUE - 8;

    /** The bits do not decode to the declared runs; the caller names the file. */
    static final class RiceException extends Exception {
        private static final long serialVersionUID = 1L;

        RiceException(String message) {
            super(message);
        }
    }

    private final byte[] data;
    private final long bits;
    private long position;

    private Rice(byte[] data) {
        this.data = data;
        this.bits = 8L * data.length;
    }

    /** All values of the (counts[i], ks[i]) runs, concatenated. */
    static short[] decode(byte[] data, List<BigInteger> counts, int[] ks) throws RiceException {
        BigInteger total = BigInteger.ZERO;
        for (BigInteger count : counts) {
            total = total.add(count);
        }
        if (total.compareTo(BigInteger.valueOf(8L * data.length)) > 0) { // every value takes at least one bit
            throw new RiceException(total + " values cannot fit in " + data.length + " bytes");
        }
        if (total.longValue() > MAX_VALUES) {
            throw new RiceException(total + " values are more than this loader decodes (" + MAX_VALUES + ")");
        }
        short[] out = new short[total.intValue()];
        Rice reader = new Rice(data);
        int at = 0;
        for (int i = 0; i < ks.length; i++) {
            int count = counts.get(i).intValue(); // each count <= total, which fits
            reader.run(count, ks[i], out, at);
            at += count;
        }
        reader.checkEnd();
        return out;
    }

    private int bit(long index) {
        return (data[(int) (index >>> 3)] >> (7 - (int) (index & 7))) & 1;
    }

    private void run(int count, int k, short[] out, int at) throws RiceException {
        if (k < 0 || k > MAX_K) {
            throw new RiceException("parameter k=" + k + " is outside 0.." + MAX_K);
        }
        long end = position + (long) count * k;
        if (end > bits) {
            throw new RiceException("the bits end inside a run's remainders");
        }
        long[] remainders = new long[count];
        for (int i = 0; i < count; i++) {
            long remainder = 0;
            for (int b = 0; b < k; b++) {
                remainder = (remainder << 1) | bit(position++);
            }
            remainders[i] = remainder;
        }
        boolean outside = false; // checked after the whole run, as Python does
        for (int i = 0; i < count; i++) {
            long quotient = 0;
            while (position < bits && bit(position) == 1) {
                quotient++;
                position++;
            }
            if (position >= bits) {
                throw new RiceException("the bits end inside a run's quotients");
            }
            position++; // the 0 that ends the quotient
            long u = (quotient << k) | remainders[i]; // quotient < 2**34, so no overflow
            outside |= u > MAX_UNSIGNED;
            out[at + i] = (short) ((u & 1) != 0 ? -(u >> 1) - 1 : u >> 1);
        }
        if (outside) {
            throw new RiceException("a value is outside int16");
        }
    }

    private void checkEnd() throws RiceException {
        boolean clean = (position + 7) / 8 == data.length;
        for (long i = position; clean && i < bits; i++) {
            clean = bit(i) == 0;
        }
        if (!clean) {
            throw new RiceException((bits - position) + " bits are left over after the last value");
        }
    }
}
