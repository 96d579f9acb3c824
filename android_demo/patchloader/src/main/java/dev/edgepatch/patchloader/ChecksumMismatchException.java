package dev.edgepatch.patchloader;

/** The SHA-256 trailer of a delta file does not match its bytes. */
public class ChecksumMismatchException extends DeltaFormatException {
    private static final long serialVersionUID = 1L;

    public ChecksumMismatchException(String message) {
        super(message);
    }
}
