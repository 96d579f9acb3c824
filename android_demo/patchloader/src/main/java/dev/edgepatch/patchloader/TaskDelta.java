package dev.edgepatch.patchloader;

import java.io.File;
import java.io.IOException;
import java.nio.ByteBuffer;

/**
 * A task's delta of either kind: a float {@link Delta} (file kind {@code delta}, for a float
 * base) or an {@link Int8Delta} (file kind {@code int8_delta}, for an int8 base). Read one
 * without knowing which with {@link #decode(ByteBuffer, String)} or {@link #read(File)}: one
 * verification, then the rules of the kind found (spec {@code edgepatch/format/spec.rst},
 * section "Container"); {@link TfliteBase#apply(TaskDelta)} takes both.
 */
public abstract class TaskDelta {
    TaskDelta() { // only Delta and Int8Delta
    }

    /** The task: name, classes, resolution and preprocessing. */
    public abstract Delta.Task task();

    /**
     * Verifies and unpacks a delta of either kind held in memory: the bytes between
     * {@code data}'s position and limit (the buffer's position is not changed).
     *
     * @param source the name messages give for the data, usually the file or asset path
     * @throws DeltaFormatException (or a subclass) the bytes are not a valid delta or int8 delta file
     * @throws NonFiniteException a tensor holds NaN or Inf, or a refold bias step is not > 0
     * @throws ShapeMismatchException a float delta's tensor contradicts its own sites
     */
    public static TaskDelta decode(ByteBuffer data, String source) throws EdgepatchException {
        TensorFile file = TensorFileReader.decode(data, DeltaFormat.TASK_DELTA_KINDS, source);
        if (DeltaFormat.INT8_DELTA.equals(file.kind)) {
            return Int8DeltaReader.decode(file, source);
        }
        return DeltaReader.decode(file, source);
    }

    /** {@link #decode(ByteBuffer, String)} for a byte array. */
    public static TaskDelta decode(byte[] data, String source) throws EdgepatchException {
        return decode(ByteBuffer.wrap(data), source);
    }

    /**
     * Reads and verifies a delta file of either kind. Its size is checked before a byte is read, its magic,
     * version and header length before the header is read, and the size the header promises before the rest.
     *
     * @throws MissingFileException the path does not exist or is not a regular file
     * @throws EdgepatchException as {@link #decode(ByteBuffer, String)}, naming the path
     * @throws IOException reading the file failed
     */
    public static TaskDelta read(File file) throws EdgepatchException, IOException {
        return decode(readBytes(file), file.getPath());
    }

    /** The file's bytes, read as the spec's step 2 says: the preamble and header first, the rest once they hold. */
    static byte[] readBytes(File file) throws EdgepatchException, IOException {
        return FileBytes.read(file, DeltaFormat.MAX_FILE_BYTES, new FileBytes.SizeCheck() {
            @Override
            public void check(long size, String path) throws EdgepatchException {
                TensorFileReader.checkFileSize(size, path);
            }
        }, new FileBytes.Gate() {
            @Override
            public int next(byte[] data, int filled, long size, String path) throws EdgepatchException {
                return TensorFileReader.nextToRead(data, filled, size, path);
            }
        });
    }
}
