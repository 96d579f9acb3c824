package dev.edgepatch.patchloader;

/** A delta file is not a valid file of the edgepatch tensor format. */
public class DeltaFormatException extends EdgepatchException {
    private static final long serialVersionUID = 1L;

    public DeltaFormatException(String message) {
        super(message);
    }
}
