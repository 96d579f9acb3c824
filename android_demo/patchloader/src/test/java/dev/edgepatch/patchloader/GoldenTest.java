package dev.edgepatch.patchloader;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import org.junit.Test;

/**
 * The cross-language golden test: Python made the bases and deltas and wrote its own
 * patched bytes ({@code TFLiteBase(base).patched_bytes(delta)}); Java must produce the
 * very same bytes, in both buffer layouts, for fp32 and fp16 deltas and every role set.
 */
public class GoldenTest {
    private static byte[] javaPatched(Map<String, Object> golden) throws Exception {
        String baseName = (String) golden.get("base");
        String deltaName = (String) golden.get("delta");
        TfliteBase base = TfliteBase.load(TestData.bytes(baseName), baseName);
        ByteBuffer model = base.apply(Delta.decode(TestData.bytes(deltaName), deltaName));
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
        assertTrue("golden.json lists the cases", cases.size() >= 6);
        for (Map<String, Object> golden : cases) {
            String what = golden.get("base") + " + " + golden.get("delta");
            byte[] expected = TestData.bytes((String) golden.get("expected"));
            byte[] actual = javaPatched(golden);
            assertSameBytes(what, expected, actual);
            assertEquals(what, golden.get("sha256"), sha256(actual));
            assertTrue(what + " changes the base", !Arrays.equals(actual, TestData.bytes((String) golden.get("base"))));
        }
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
