package dev.edgepatch.patchloader;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.io.File;
import java.io.RandomAccessFile;
import java.util.ArrayList;
import java.util.List;
import org.junit.Test;

/**
 * Issue 17, finding 6 on the Java side: a delta file is read as the spec's step 2 says, the 16 preamble
 * bytes and the header first, and the rest only once they hold; a 1 GiB junk file costs 16 bytes.
 */
public class HostileFileTest {
    private static File sparseFile(long size) throws Exception {
        File file = File.createTempFile("hostile", ".delta");
        file.deleteOnExit();
        RandomAccessFile raf = new RandomAccessFile(file, "rw");
        try {
            raf.setLength(size); // zeros, without writing them
        } finally {
            raf.close();
        }
        return file;
    }

    @Test
    public void aGiBOfJunkIsRefusedAfterItsFirst16Bytes() throws Exception {
        File junk = sparseFile(DeltaFormat.MAX_FILE_BYTES);
        final List<Integer> seen = new ArrayList<Integer>();
        try {
            FileBytes.read(junk, DeltaFormat.MAX_FILE_BYTES, new FileBytes.SizeCheck() {
                @Override
                public void check(long size, String path) {
                }
            }, new FileBytes.Gate() {
                @Override
                public int next(byte[] data, int filled, long size, String path) throws EdgepatchException {
                    seen.add(data.length);
                    return TensorFileReader.nextToRead(data, filled, size, path);
                }
            });
            fail("junk was accepted");
        } catch (DeltaFormatException error) {
            assertEquals(junk.getPath() + ": bad magic: expected b'EDGEPTCH', got b'\\x00\\x00\\x00\\x00\\x00\\x00"
                    + "\\x00\\x00'", error.getMessage());
        }
        assertEquals("the gate saw nothing, then the 16 preamble bytes only", "[0, 16]", seen.toString());
        long start = System.nanoTime();
        try {
            TaskDelta.read(junk);
            fail("junk was accepted");
        } catch (DeltaFormatException error) {
            assertTrue(error.getMessage().endsWith(": bad magic: expected b'EDGEPTCH', got b'\\x00\\x00\\x00\\x00"
                    + "\\x00\\x00\\x00\\x00'"));
        }
        assertTrue("refused in well under a second", System.nanoTime() - start < 500000000L);
    }

    @Test
    public void theRestIsReadOnlyWhenTheHeaderPromisesTheFilesSize() throws Exception {
        byte[] good = TestData.bytes("gamma.delta");
        byte[] padded = java.util.Arrays.copyOf(good, good.length + (64 << 20)); // 64 MiB of trailing zeros
        File file = File.createTempFile("padded", ".delta");
        file.deleteOnExit();
        java.io.FileOutputStream out = new java.io.FileOutputStream(file);
        try {
            out.write(padded);
        } finally {
            out.close();
        }
        try {
            TaskDelta.read(file);
            fail("trailing bytes were accepted");
        } catch (DeltaFormatException error) {
            assertTrue(error.getMessage(), error.getMessage().startsWith(file.getPath() + ": " + (64 << 20)
                    + " unexpected trailing bytes: file is " + padded.length + " bytes"));
        }
        File exact = File.createTempFile("exact", ".delta");
        exact.deleteOnExit();
        out = new java.io.FileOutputStream(exact);
        try {
            out.write(good);
        } finally {
            out.close();
        }
        assertArrayEquals(good, TaskDelta.readBytes(exact));
    }
}
