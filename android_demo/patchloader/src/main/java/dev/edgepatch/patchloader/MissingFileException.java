package dev.edgepatch.patchloader;

/** A file the caller named does not exist or is not a regular file. */
public class MissingFileException extends EdgepatchException {
    private static final long serialVersionUID = 1L;

    public MissingFileException(String message) {
        super(message);
    }
}
