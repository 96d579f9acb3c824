package dev.edgepatch.patchloader;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.util.List;
import java.util.Map;
import org.junit.Test;

/**
 * The resize golden ({@code testdata/resize/}, written by make_testdata.py): a JPEG decoded by
 * Pillow and the Python runtime's "bilinear" resize of it. Java's resize must equal it byte for byte.
 */
public class ImageResamplerTest {
    private static int intOf(Map<String, Object> entry, String key) {
        return (int) ((Long) entry.get(key)).longValue();
    }

    @Test
    public void resizeEqualsPythonBytesExactly() throws Exception {
        List<Map<String, Object>> cases = TestData.cases("resize/cases.json");
        assertEquals(3, cases.size());
        for (Map<String, Object> entry : cases) {
            byte[] source = TestData.bytes("resize/" + entry.get("source"));
            byte[] expected = TestData.bytes("resize/" + entry.get("out"));
            int width = intOf(entry, "out_width");
            int height = intOf(entry, "out_height");
            byte[] actual = ImageResampler.resizeRgb(source, intOf(entry, "width"), intOf(entry, "height"), width, height);
            assertEquals(entry.get("out") + ": size", expected.length, actual.length);
            int worst = 0;
            int differing = 0;
            for (int i = 0; i < expected.length; i++) {
                int gap = Math.abs((expected[i] & 0xff) - (actual[i] & 0xff));
                worst = Math.max(worst, gap);
                differing += gap == 0 ? 0 : 1;
            }
            if (differing > 0) {
                fail(entry.get("out") + ": " + differing + " of " + expected.length + " bytes differ, by up to " + worst);
            }
        }
    }

    @Test
    public void argbDropsAlphaAndMatchesRgb() throws Exception {
        Map<String, Object> entry = TestData.cases("resize/cases.json").get(0);
        byte[] source = TestData.bytes("resize/" + entry.get("source"));
        int w = intOf(entry, "width");
        int h = intOf(entry, "height");
        int[] argb = new int[w * h];
        for (int i = 0; i < argb.length; i++) {
            int alpha = (i * 37) & 0xff; // any alpha: the Python runtime's RGB conversion ignores it
            argb[i] = alpha << 24 | (source[3 * i] & 0xff) << 16 | (source[3 * i + 1] & 0xff) << 8 | (source[3 * i + 2] & 0xff);
        }
        byte[] rgb = ImageResampler.resizeRgb(source, w, h, 20, 20);
        int[] packed = ImageResampler.resizeArgb(argb, w, h, 20, 20);
        for (int i = 0; i < packed.length; i++) {
            int expected = 0xff000000 | (rgb[3 * i] & 0xff) << 16 | (rgb[3 * i + 1] & 0xff) << 8 | (rgb[3 * i + 2] & 0xff);
            assertEquals("pixel " + i, expected, packed[i]);
        }
    }

    @Test
    public void sameSizeIsACopyAndOnePixelLinesWork() {
        byte[] rgb = {1, 2, 3, 4, 5, 6, 7, 8, 9};
        byte[] same = ImageResampler.resizeRgb(rgb, 3, 1, 3, 1);
        assertTrue(same != rgb && java.util.Arrays.equals(rgb, same));
        byte[] column = ImageResampler.resizeRgb(rgb, 1, 3, 1, 1); // a 1-wide image: the y pass alone
        // 3 to 1: support 3, triangle weights 2:3:2 on rows 1, 4, 7 (Pillow gives [4, 5, 6] too)
        assertTrue(java.util.Arrays.equals(new byte[] {4, 5, 6}, column));
    }

    @Test(expected = IllegalArgumentException.class)
    public void aBufferOfTheWrongSizeIsRefused() {
        ImageResampler.resizeRgb(new byte[5], 2, 1, 1, 1);
    }
}
