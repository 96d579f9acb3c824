package dev.edgepatch.patchloader;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import org.junit.Test;

/**
 * The cross-language golden test: Python made the bases and deltas and wrote its own
 * patched bytes ({@code TFLiteBase(base).patched_bytes(delta)}, for an int8 base
 * {@code TFLiteInt8Base}); Java must produce the very same bytes, in both buffer layouts,
 * for fp32 and fp16 deltas and every role set, and for exact, compact (refold) and
 * sparse-edit int8 deltas.
 */
public class GoldenTest {
    private static byte[] javaPatched(Map<String, Object> golden) throws Exception {
        String baseName = (String) golden.get("base");
        String deltaName = (String) golden.get("delta");
        TfliteBase base = TfliteBase.load(TestData.bytes(baseName), baseName);
        ByteBuffer model = base.apply(TaskDelta.decode(TestData.bytes(deltaName), deltaName));
        byte[] out = new byte[model.remaining()];
        model.get(out);
        return out;
    }

    private static void assertSameBytes(String what, byte[] expected, byte[] actual) {
        assertEquals(what + ": size", expected.length, actual.length);
        for (int i = 0; i < expected.length; i++) {
            if (expected[i] != actual[i]) {
                fail(what + ": first differing byte at offset " + i + ": Python " + (expected[i] & 0xff) + ", Java "
                        + (actual[i] & 0xff));
            }
        }
    }

    @Test
    public void everyGoldenCaseMatchesPythonByteForByte() throws Exception {
        List<Map<String, Object>> cases = TestData.cases("golden.json");
        assertTrue("golden.json lists the cases", cases.size() >= 9);
        int int8 = 0;
        for (Map<String, Object> golden : cases) {
            int8 += "int8_delta".equals(golden.get("kind")) ? 1 : 0;
            String what = golden.get("base") + " + " + golden.get("delta");
            byte[] expected = TestData.bytes((String) golden.get("expected"));
            byte[] actual = javaPatched(golden);
            assertSameBytes(what, expected, actual);
            assertEquals(what, golden.get("sha256"), sha256(actual));
            assertTrue(what + " changes the base", !Arrays.equals(actual, TestData.bytes((String) golden.get("base"))));
        }
        assertEquals("int8 cases: exact, compact, sparse edits, rounding", 4, int8);
    }

    /**
     * Issue 20: a delta that lists a subset of the base's sites (dw: scale+bias, pw: scale) gives Python's
     * bytes, and every byte outside the tensors it writes (the other sites included) is the base's.
     */
    @Test
    public void aPartialDeltaLeavesEverySiteItDoesNotNameBitForBitAsTheBase() throws Exception {
        byte[] baseBytes = TestData.bytes("base.tflite");
        TfliteBase base = TfliteBase.load(baseBytes, "base.tflite");
        Delta partial = Delta.decode(TestData.bytes("partial.delta"), "partial.delta");
        List<String> named = new ArrayList<String>();
        for (Delta.Site site : partial.sites()) {
            named.add(site.name());
        }
        assertEquals(Arrays.asList("dw", "pw"), named);
        ByteBuffer model = base.apply(partial);
        byte[] out = new byte[model.remaining()];
        model.get(out);
        assertSameBytes("partial.delta", TestData.bytes("expected/partial.tflite"), out);
        boolean[] written = new boolean[out.length];
        int untouched = 0;
        for (String name : base.siteNames()) {
            TfliteSites.Site site = base.site(name);
            boolean kernelSame = sameRange(out, baseBytes, site.kernel);
            boolean biasSame = sameRange(out, baseBytes, site.bias);
            if (named.contains(name)) {
                assertTrue(name + ": its scale rewrites the kernel", !kernelSame);
                assertEquals(name + ": its bias is rewritten only if the delta has one", "pw".equals(name), biasSame);
                Arrays.fill(written, site.kernel.offset, site.kernel.offset + 4 * site.kernel.count, true);
                Arrays.fill(written, site.bias.offset, site.bias.offset + 4 * site.bias.count, true);
            } else {
                assertTrue(name + " is not in the delta, so it keeps the base's kernel and bias", kernelSame && biasSame);
                untouched++;
            }
        }
        assertEquals("stem, plain_conv and classifier", 3, untouched);
        for (int i = 0; i < out.length; i++) {
            if (!written[i] && out[i] != baseBytes[i]) {
                fail("byte " + i + " lies outside the tensors the delta writes, yet differs from the base");
            }
        }
    }

    private static boolean sameRange(byte[] a, byte[] b, TfliteSites.Slot slot) {
        int end = slot.offset + 4 * slot.count;
        return Arrays.equals(Arrays.copyOfRange(a, slot.offset, end), Arrays.copyOfRange(b, slot.offset, end));
    }

    @Test
    public void int8CasesAreWhatTheyClaim() throws Exception {
        Int8Delta exact = Int8Delta.decode(TestData.bytes("gamma_exact.int8.delta"), "exact");
        Int8Delta compact = Int8Delta.decode(TestData.bytes("gamma_compact.int8.delta"), "compact");
        Int8Delta edits = Int8Delta.decode(TestData.bytes("gamma_edits.int8.delta"), "edits");
        assertEquals(0, exact.refoldCount());
        assertTrue(compact.refoldCount() >= 3);
        assertTrue(!exact.data.isEmpty() && exact.edits.isEmpty());
        assertTrue(edits.data.isEmpty() && !edits.edits.isEmpty());
        assertEquals(exact.baseSha256(), edits.baseSha256());
        for (String name : new String[] {"base_int8_exact.tflite", "base_int8_compact.tflite"}) {
            TfliteBase base = TfliteBase.load(TestData.bytes(name), name);
            assertTrue(name, base.isInt8());
            assertEquals(name, Arrays.<String>asList(), base.siteNames());
        }
        assertTrue(!TfliteBase.load(TestData.bytes("base.tflite"), "base.tflite").isInt8());
    }

    @Test
    public void int8ApplyIntoAReusedBufferGivesTheSameBytesAndLeavesTheBaseAlone() throws Exception {
        byte[] baseBytes = TestData.bytes("base_int8_exact.tflite");
        byte[] original = baseBytes.clone();
        TfliteBase base = TfliteBase.load(baseBytes, "base_int8_exact.tflite");
        ByteBuffer target = ByteBuffer.allocateDirect(base.size() + 3);
        for (String name : new String[] {"gamma_edits.int8", "gamma_exact.int8", "gamma_edits.int8"}) {
            TaskDelta delta = TaskDelta.decode(TestData.bytes(name + ".delta"), name);
            base.check(delta);
            ByteBuffer model = base.applyInto(delta, target);
            assertEquals(ByteOrder.nativeOrder(), model.order());
            assertEquals(base.size(), model.remaining());
            byte[] out = new byte[model.remaining()];
            model.get(out);
            assertSameBytes(name, TestData.bytes("expected/" + name + ".tflite"), out);
        }
        assertArrayEquals(original, baseBytes);
    }

    @Test
    public void applyReturnsADirectNativeOrderBufferOfTheBaseSize() throws Exception {
        TfliteBase base = TfliteBase.load(TestData.bytes("base.tflite"), "base.tflite");
        ByteBuffer model = base.apply(Delta.decode(TestData.bytes("gamma.delta"), "gamma.delta"));
        assertTrue(model.isDirect());
        assertEquals(ByteOrder.nativeOrder(), model.order());
        assertEquals(0, model.position());
        assertEquals(base.size(), model.limit());
        assertEquals(TestData.bytes("base.tflite").length, base.size());
    }

    @Test
    public void applyIntoAReusedBufferGivesTheSameBytesAndLeavesTheBaseAlone() throws Exception {
        byte[] baseBytes = TestData.bytes("base.tflite");
        byte[] original = baseBytes.clone();
        TfliteBase base = TfliteBase.load(baseBytes, "base.tflite");
        ByteBuffer target = ByteBuffer.allocateDirect(base.size() + 100);
        for (String name : new String[] {"mixed", "gamma", "delta_dw", "gamma_fp16"}) {
            ByteBuffer model = base.applyInto(Delta.decode(TestData.bytes(name + ".delta"), name), target);
            byte[] out = new byte[model.remaining()];
            model.get(out);
            assertSameBytes(name, TestData.bytes("expected/" + name + ".tflite"), out);
        }
        assertArrayEquals(original, baseBytes);
    }

    @Test
    public void fp16DeltaWidensExactlyToThePythonValues() throws Exception {
        Delta fp32 = Delta.decode(TestData.bytes("gamma.delta"), "gamma.delta");
        Delta fp16 = Delta.decode(TestData.bytes("gamma_fp16.delta"), "gamma_fp16.delta");
        assertEquals(fp32.sites().size(), fp16.sites().size());
        for (int i = 0; i < fp32.sites().size(); i++) {
            Delta.Site full = fp32.sites().get(i);
            Delta.Site half = fp16.sites().get(i);
            assertEquals(full.name(), half.name());
            assertEquals(full.roles(), half.roles());
            float[] a = full.bias();
            float[] b = half.bias();
            for (int k = 0; k < a.length; k++) {
                assertEquals(full.name() + " bias " + k, a[k], b[k], Math.abs(a[k]) * 1e-3 + 1e-4);
            }
        }
    }

    @Test
    public void theExternalLayoutBaseHasTheSameSitesAtOtherOffsets() throws Exception {
        TfliteBase inline = TfliteBase.load(TestData.bytes("base.tflite"), "base.tflite");
        TfliteBase external = TfliteBase.load(TestData.bytes("base_external.tflite"), "base_external.tflite");
        assertEquals(Arrays.asList("stem", "dw", "pw", "plain_conv", "classifier"), inline.siteNames());
        assertEquals(inline.siteNames(), external.siteNames());
        assertTrue(!inline.sha256().equals(external.sha256()));
    }

    static String sha256(byte[] data) {
        return Text.hex(TensorFileReader.sha256().digest(data));
    }
}
