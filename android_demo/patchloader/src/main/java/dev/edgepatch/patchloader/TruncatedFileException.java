package dev.edgepatch.patchloader;

/** A delta file is shorter than its own header says. */
public class TruncatedFileException extends DeltaFormatException {
    private static final long serialVersionUID = 1L;

    public TruncatedFileException(String message) {
        super(message);
    }
}
