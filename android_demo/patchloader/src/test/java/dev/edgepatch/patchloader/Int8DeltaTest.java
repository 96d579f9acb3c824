package dev.edgepatch.patchloader;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.Charset;
import java.util.Random;
import org.junit.Test;

/**
 * Int8 deltas beyond the golden and bad-input tables: the kinds do not mix, reading either
 * kind, the refold arithmetic's edge values, and sweeps over damaged files (every one must
 * end in an {@link EdgepatchException}, never in another exception).
 */
public class Int8DeltaTest {
    private static final String BASE = "base_int8_compact.tflite";
    private static final String COMPACT = "gamma_compact.int8.delta";

    @Test
    public void aFloatDeltaOnAnInt8BaseAndAnInt8DeltaOnAFloatBaseAreWrongBases() throws Exception {
        TfliteBase int8 = TfliteBase.load(TestData.bytes(BASE), BASE);
        TfliteBase float32 = TfliteBase.load(TestData.bytes("base.tflite"), "base.tflite");
        Delta gamma = Delta.decode(TestData.bytes("gamma.delta"), "gamma.delta");
        Int8Delta compact = Int8Delta.decode(TestData.bytes(COMPACT), COMPACT);
        try {
            int8.apply(gamma);
            fail("applied a float delta to an int8 base");
        } catch (WrongBaseException expected) {
            assertEquals("float delta for task 'gamma' needs a float base; " + BASE
                    + " is an int8 base (it takes int8 deltas)", expected.getMessage());
        }
        try {
            float32.applyInto(compact, ByteBuffer.allocateDirect(float32.size()));
            fail("applied an int8 delta to a float base");
        } catch (WrongBaseException expected) {
            assertEquals("int8 delta for task 'gamma' needs an int8 base; base.tflite is a float base (it takes "
                    + "float deltas)", expected.getMessage());
        }
        try {
            int8.check(gamma);
            fail("checked a float delta against an int8 base");
        } catch (WrongBaseException expected) {
            assertTrue(expected.getMessage().startsWith("float delta for task 'gamma' needs a float base"));
        }
    }

    @Test
    public void taskDeltaReadsEitherKindAndTheTypedReadersOnlyTheirOwn() throws Exception {
        assertTrue(TaskDelta.decode(TestData.bytes(COMPACT), COMPACT) instanceof Int8Delta);
        assertTrue(TaskDelta.decode(TestData.bytes("gamma.delta"), "gamma.delta") instanceof Delta);
        assertEquals("gamma", TaskDelta.decode(TestData.bytes(COMPACT), COMPACT).task().name());
        expectHeader("x: file_kind: expected 'delta', got 'int8_delta'", new Runnable() {
            @Override
            public void run() {
                decodeQuietly(true, COMPACT);
            }
        });
        expectHeader("bad/file_kind_patch.delta: file_kind: expected one of delta, int8_delta, got 'patch'",
                new Runnable() {
                    @Override
                    public void run() {
                        decodeQuietly(false, "bad/file_kind_patch.delta");
                    }
                });
    }

    /** Decodes as Delta (float) or TaskDelta, rethrowing the checked exception unchecked for expectHeader. */
    private static void decodeQuietly(boolean asFloat, String name) {
        try {
            if (asFloat) {
                Delta.decode(TestData.corpusBytes(name), "x");
            } else {
                TaskDelta.decode(TestData.corpusBytes(name), name);
            }
        } catch (Exception error) {
            throw new IllegalStateException(error);
        }
    }

    private static void expectHeader(String message, Runnable decode) {
        try {
            decode.run();
            fail("accepted: expected " + message);
        } catch (IllegalStateException wrapped) {
            assertTrue(String.valueOf(wrapped.getCause()), wrapped.getCause() instanceof HeaderException);
            assertEquals(message, wrapped.getCause().getMessage());
        }
    }

    @Test
    public void scaleFactorsArePositiveFiniteAndOneAtZero() {
        assertEquals(1.0f, Int8Patcher.factor((short) 0), 0f);
        assertEquals(1.0f + 1.0f / 128, Int8Patcher.factor((short) 1), 0f); // 7 mantissa bits
        assertEquals(0.5f, Int8Patcher.factor((short) -128), 0f);
        float previous = 0;
        for (int code = -Int8DeltaReader.SCALE_CODE_LIMIT; code <= Int8DeltaReader.SCALE_CODE_LIMIT; code++) {
            float r = Int8Patcher.factor((short) code);
            assertTrue(code + ": " + r, r > previous && !Float.isInfinite(r));
            previous = r;
        }
        assertEquals(16255, Int8DeltaReader.SCALE_CODE_LIMIT);
    }

    @Test
    public void int32BiasesClampAndRoundLikeNumpy() {
        assertEquals(2, Int8Patcher.int32(Math.rint(2.5)));
        assertEquals(-2, Int8Patcher.int32(Math.rint(-2.5)));
        assertEquals(Integer.MAX_VALUE, Int8Patcher.int32(1e300));
        assertEquals(Integer.MIN_VALUE, Int8Patcher.int32(Double.NEGATIVE_INFINITY));
        assertEquals(Integer.MIN_VALUE, Int8Patcher.int32(Double.NaN));
    }

    @Test
    public void everyTruncationIsATruncatedFile() throws Exception {
        byte[] good = TestData.bytes(COMPACT);
        for (int length = 0; length < good.length; length++) {
            try {
                Int8Delta.decode(ByteBuffer.wrap(good, 0, length), "cut.delta");
                fail("accepted the first " + length + " bytes");
            } catch (TruncatedFileException expected) {
                assertTrue(expected.getMessage(), expected.getMessage().startsWith("cut.delta: "));
            }
        }
    }

    @Test
    public void everySingleBitFlipIsRejectedAsAFormatError() throws Exception {
        byte[] good = TestData.bytes(COMPACT);
        for (int at = 0; at < good.length; at++) {
            byte[] bad = good.clone();
            bad[at] ^= (byte) (1 << (at % 8));
            try {
                TaskDelta.decode(bad, "flip.delta");
                fail("accepted a flip at byte " + at);
            } catch (DeltaFormatException expected) {
                // magic/version/header_len/size/checksum, depending on where the flip landed
            }
        }
    }

    /** A valid trailer for damaged content, so the damage reaches the int8 rules and the patcher. */
    private static byte[] resigned(byte[] data) {
        byte[] digest = TensorFileReader.sha256().digest(java.util.Arrays.copyOf(data, data.length - 32));
        System.arraycopy(digest, 0, data, data.length - 32, 32);
        return data;
    }

    @Test
    public void resignedPayloadDamageFailsCleanlyOrApplies() throws Exception {
        TfliteBase base = TfliteBase.load(TestData.bytes(BASE), BASE);
        byte[] good = TestData.bytes(COMPACT);
        int payload = 16 + ByteBuffer.wrap(good, 12, 4).order(ByteOrder.LITTLE_ENDIAN).getInt();
        Random random = new Random(11);
        int applied = 0;
        for (int round = 0; round < 4000; round++) {
            byte[] bad = good.clone();
            for (int flips = 1 + random.nextInt(3); flips > 0; flips--) {
                bad[payload + random.nextInt(bad.length - 32 - payload)] ^= (byte) (1 << random.nextInt(8));
            }
            try {
                base.apply(TaskDelta.decode(resigned(bad), "damaged.delta"));
                applied++;
            } catch (EdgepatchException expected) {
                // a NaN scale, bad codes, a wrong data size...
            } catch (RuntimeException escaped) {
                throw new AssertionError("round " + round + ": " + escaped, escaped);
            }
        }
        assertTrue("some damage (a changed scale or code) still applies: " + applied, applied > 0);
    }

    @Test
    public void randomDamageToAnInt8BaseNeverEscapesAsAnotherException() throws Exception {
        byte[] good = TestData.bytes(BASE);
        byte[] delta = TestData.bytes(COMPACT);
        String oldSha = GoldenTest.sha256(good);
        Charset ascii = Charset.forName("US-ASCII");
        String header = new String(delta, ascii);
        int shaAt = header.indexOf(oldSha);
        assertTrue(shaAt > 0);
        Random random = new Random(5);
        int applied = 0;
        for (int round = 0; round < 3000; round++) {
            byte[] bad = good.clone();
            for (int flips = 1 + random.nextInt(4); flips > 0; flips--) {
                bad[random.nextInt(bad.length)] = (byte) random.nextInt(256);
            }
            int length = round % 5 == 0 ? random.nextInt(bad.length) : bad.length;
            try {
                TfliteBase base = TfliteBase.load(ByteBuffer.wrap(bad, 0, length), "damaged.tflite");
                // the delta, fingerprinted for the damaged bytes, so that it is applied to them
                byte[] moved = delta.clone();
                byte[] sha = base.sha256().getBytes(ascii);
                System.arraycopy(sha, 0, moved, shaAt, sha.length);
                base.apply(TaskDelta.decode(resigned(moved), "moved.delta"));
                applied++;
            } catch (EdgepatchException expected) {
                assertTrue(expected.getMessage(), expected instanceof BaseModelException
                        || expected instanceof WrongBaseException || expected instanceof ShapeMismatchException
                        || expected instanceof NonFiniteException);
            } catch (RuntimeException escaped) {
                throw new AssertionError("round " + round + ": " + escaped, escaped);
            }
        }
        assertTrue("most damage leaves a patchable base: " + applied, applied > 100);
    }
}
