package dev.edgepatch.patchloader;

/** The JSON header of a delta file is malformed or lies about the payload. */
public class HeaderException extends DeltaFormatException {
    private static final long serialVersionUID = 1L;

    public HeaderException(String message) {
        super(message);
    }
}
