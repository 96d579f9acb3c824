package dev.edgepatch.patchloader;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNull;

import java.io.File;
import java.util.Arrays;
import org.junit.Test;

/** What a decoded delta exposes: task, kinds, fingerprints and per-site values. */
public class DeltaTest {
    @Test
    public void gammaExposesItsTaskAndSites() throws Exception {
        Delta delta = Delta.read(new File(TestData.dir(), "gamma.delta"));
        assertEquals("gamma", delta.task().name());
        assertEquals(Arrays.asList("gamma_0", "gamma_1", "gamma_2"), delta.task().classes());
        assertEquals(32, delta.task().resolution());
        assertEquals("rgb", delta.task().channels());
        assertArrayEquals(new double[] {1 / 127.5, 1 / 127.5, 1 / 127.5}, delta.task().preprocessingScale(), 0.0);
        assertArrayEquals(new double[] {-1.0, -1.0, -1.0}, delta.task().preprocessingOffset(), 0.0);
        assertArrayEquals(new int[] {0, 1, 2}, delta.task().pixelOrder());
        assertEquals(Arrays.asList("scale_bias", "logits"), delta.kinds());
        assertEquals(64, delta.baseSha256().get("tflite").length());
        Delta.Site stem = delta.sites().get(0);
        assertEquals("stem", stem.name());
        assertEquals("conv", stem.op());
        assertEquals(8, stem.channels());
        assertEquals("scale+bias", stem.roles());
        assertEquals(8, stem.scale().length);
        assertNull(stem.kernel());
        Delta.Site head = delta.sites().get(delta.sites().size() - 1);
        assertEquals("classifier", head.name());
        assertEquals("kernel+bias", head.roles());
        assertArrayEquals(new int[] {12, 3}, head.kernelShape());
    }

    @Test
    public void versionOneFileReadsAsTheSameTask() throws Exception {
        // gamma_v1.delta: gamma written by a version 1 writer (scalar scale and offset, implicitly RGB)
        Delta current = Delta.read(new File(TestData.dir(), "gamma.delta"));
        Delta old = Delta.read(new File(TestData.dir(), "gamma_v1.delta"));
        assertEquals("rgb", old.task().channels());
        assertArrayEquals(current.task().preprocessingScale(), old.task().preprocessingScale(), 0.0);
        assertArrayEquals(current.task().preprocessingOffset(), old.task().preprocessingOffset(), 0.0);
        assertEquals(current.sites().size(), old.sites().size());
        for (int i = 0; i < current.sites().size(); i++) {
            assertArrayEquals(current.sites().get(i).scale(), old.sites().get(i).scale(), 0f);
        }
    }

    @Test
    public void mixedCoversEveryRoleSet() throws Exception {
        Delta delta = Delta.decode(TestData.bytes("mixed.delta"), "mixed.delta");
        StringBuilder roles = new StringBuilder();
        for (Delta.Site site : delta.sites()) {
            roles.append(site.name()).append('=').append(site.roles()).append(' ');
        }
        assertEquals("stem=scale pw=bias dw=kernel plain_conv=kernel+bias classifier=bias ", roles.toString());
    }

    @Test
    public void gettersReturnCopies() throws Exception {
        Delta delta = Delta.decode(TestData.bytes("gamma.delta"), "gamma.delta");
        float[] scale = delta.sites().get(0).scale();
        scale[0] = 1234f;
        assertEquals(false, delta.sites().get(0).scale()[0] == 1234f);
    }
}
