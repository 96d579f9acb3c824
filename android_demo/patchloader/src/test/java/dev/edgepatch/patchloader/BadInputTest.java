package dev.edgepatch.patchloader;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.io.File;
import java.nio.ByteBuffer;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.junit.Test;

/**
 * Bad inputs: the corpus from Python (tests/corpus: same class, same message), then Java-side sweeps:
 * every truncation and every single-bit flip of a delta, and random damage to a base,
 * must end in an {@link EdgepatchException}, never in another exception.
 */
public class BadInputTest {
    /** Runs (base, delta) as an app would, reading the delta as {@code kind}; returns what was thrown, or null. */
    private static EdgepatchException outcome(String baseName, String deltaName, Object kind) throws Exception {
        try {
            TaskDelta delta = deltaName == null ? null : "int8_delta".equals(kind)
                    ? Int8Delta.decode(TestData.corpusBytes(deltaName), deltaName)
                    : Delta.decode(TestData.corpusBytes(deltaName), deltaName);
            TfliteBase base = TfliteBase.load(TestData.corpusBytes(baseName), baseName);
            if (delta != null) {
                base.apply(delta);
            }
            return null;
        } catch (EdgepatchException error) {
            return error;
        }
    }

    /** Python's class name to ours: HeaderError -> HeaderException. */
    private static String javaClass(String pythonClass) {
        return pythonClass.replaceAll("Error$", "Exception");
    }

    @Test
    public void everyBadCaseFailsWithPythonsClassAndMessage() throws Exception {
        List<Map<String, Object>> cases = TestData.corpusCases();
        assertTrue("bad.json lists the cases", cases.size() >= 80);
        int int8 = 0;
        for (Map<String, Object> bad : cases) {
            String what = bad.get("base") + " + " + bad.get("delta");
            int8 += "int8_delta".equals(bad.get("kind")) ? 1 : 0;
            EdgepatchException error = outcome((String) bad.get("base"), (String) (bad.get("delta") == Json.NULL
                    ? null : bad.get("delta")), bad.get("kind"));
            if (error == null) {
                fail(what + ": Java accepted it; Python raised " + bad.get("error") + ": " + bad.get("message"));
            }
            assertEquals(what, javaClass((String) bad.get("error")), error.getClass().getSimpleName());
            assertEquals(what, bad.get("message"), error.getMessage());
        }
        assertTrue("bad.json lists int8 cases", int8 >= 40);
    }

    @Test
    public void exceptionClassesMirrorThePythonHierarchy() {
        assertTrue(new TruncatedFileException("x") instanceof DeltaFormatException);
        assertTrue(new ChecksumMismatchException("x") instanceof DeltaFormatException);
        assertTrue(new HeaderException("x") instanceof DeltaFormatException);
        assertTrue(new DeltaFormatException("x") instanceof EdgepatchException);
        assertTrue(new WrongBaseException("x") instanceof EdgepatchException);
        assertTrue(new ShapeMismatchException("x") instanceof EdgepatchException);
        assertTrue(new NonFiniteException("x") instanceof EdgepatchException);
        assertTrue(new BaseModelException("x") instanceof EdgepatchException);
        assertTrue(new MissingFileException("x") instanceof EdgepatchException);
    }

    @Test
    public void everyTruncationIsATruncatedFile() throws Exception {
        byte[] good = TestData.bytes("gamma.delta");
        for (int length = 0; length < good.length; length++) {
            try {
                Delta.decode(ByteBuffer.wrap(good, 0, length), "cut.delta");
                fail("accepted the first " + length + " bytes");
            } catch (TruncatedFileException expected) {
                assertTrue(expected.getMessage(), expected.getMessage().startsWith("cut.delta: "));
            }
        }
    }

    @Test
    public void everySingleBitFlipIsRejectedAsAFormatError() throws Exception {
        byte[] good = TestData.bytes("gamma.delta");
        for (int at = 0; at < good.length; at++) {
            for (int bit = 0; bit < 8; bit += 3) {
                byte[] bad = good.clone();
                bad[at] ^= (byte) (1 << bit);
                try {
                    Delta.decode(bad, "flip.delta");
                    fail("accepted a flip of bit " + bit + " at byte " + at);
                } catch (DeltaFormatException expected) {
                    // magic/version/header_len/size/checksum, depending on where the flip landed
                }
            }
        }
    }

    @Test
    public void decodeReadsOnlyBetweenPositionAndLimit() throws Exception {
        byte[] good = TestData.bytes("gamma.delta");
        byte[] framed = new byte[good.length + 20];
        System.arraycopy(good, 0, framed, 7, good.length);
        ByteBuffer view = ByteBuffer.wrap(framed, 7, good.length);
        Delta delta = Delta.decode(view, "framed.delta");
        assertEquals("gamma", delta.task().name());
        assertEquals(7, view.position());
    }

    @Test
    public void randomDamageToTheBaseNeverEscapesAsAnotherException() throws Exception {
        byte[] good = TestData.bytes("base.tflite");
        byte[] external = TestData.bytes("base_external.tflite");
        Random random = new Random(5);
        for (int round = 0; round < 3000; round++) {
            byte[] bad = (round % 2 == 0 ? good : external).clone();
            for (int flips = 1 + random.nextInt(4); flips > 0; flips--) {
                bad[random.nextInt(bad.length)] = (byte) random.nextInt(256);
            }
            int length = round % 5 == 0 ? random.nextInt(bad.length) : bad.length;
            try {
                TfliteBase.load(ByteBuffer.wrap(bad, 0, length), "damaged.tflite");
            } catch (BaseModelException expected) {
                assertTrue(expected.getMessage(), expected.getMessage().startsWith("damaged.tflite: "));
            } catch (RuntimeException escaped) {
                throw new AssertionError("round " + round + ": " + escaped, escaped);
            }
        }
    }

    @Test
    public void readingAMissingFileOrADirectoryIsAMissingFile() throws Exception {
        File missing = new File(TestData.dir(), "no-such.delta");
        try {
            Delta.read(missing);
            fail("read a missing file");
        } catch (MissingFileException expected) {
            assertEquals(missing.getPath() + ": no such file", expected.getMessage());
        }
        try {
            Delta.read(TestData.dir());
            fail("read a directory");
        } catch (MissingFileException expected) {
            assertEquals(TestData.dir().getPath() + ": is a directory, not a file", expected.getMessage());
        }
        try {
            TfliteBase.load(missing);
            fail("loaded a missing base");
        } catch (MissingFileException expected) {
            assertEquals(missing.getPath() + ": no such file", expected.getMessage());
        }
    }

    @Test
    public void aTooSmallTargetIsAnIllegalArgument() throws Exception {
        TfliteBase base = TfliteBase.load(TestData.bytes("base.tflite"), "base.tflite");
        Delta delta = Delta.decode(TestData.bytes("gamma.delta"), "gamma.delta");
        try {
            base.applyInto(delta, ByteBuffer.allocateDirect(base.size() - 1));
            fail("wrote into a small buffer");
        } catch (IllegalArgumentException expected) {
            assertEquals("target must be a writable buffer of at least " + base.size() + " bytes; received capacity "
                    + (base.size() - 1), expected.getMessage());
        }
    }
}
