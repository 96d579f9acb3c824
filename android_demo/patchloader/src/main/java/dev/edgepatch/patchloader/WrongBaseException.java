package dev.edgepatch.patchloader;

/** A delta was made for another base model than the one loaded. */
public class WrongBaseException extends EdgepatchException {
    private static final long serialVersionUID = 1L;

    public WrongBaseException(String message) {
        super(message);
    }
}
