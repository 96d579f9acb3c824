package dev.edgepatch.patchloader;

/**
 * Base class of every exception the patch loader throws on bad input: a malformed or
 * corrupted delta, a delta made for another base, or a base that is not an edgepatch
 * {@code .tflite}. Messages name the file (or {@code <bytes>}), the tensor or site, and
 * the expected versus the actual value.
 *
 * <p>The subclasses are the error names of the spec ({@code edgepatch/format/spec.rst}, section
 * "Verification order" and the sections on applying a delta) one to one ({@code HeaderError}
 * is {@link HeaderException}, and so on), so that every loader rejects the same file with the
 * same class.
 */
public class EdgepatchException extends Exception {
    private static final long serialVersionUID = 1L;

    public EdgepatchException(String message) {
        super(message);
    }
}
