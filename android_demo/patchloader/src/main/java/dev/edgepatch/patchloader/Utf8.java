package dev.edgepatch.patchloader;

import java.nio.ByteBuffer;

/**
 * Strict UTF-8 decoding whose errors read as CPython's ({@code invalid start byte},
 * {@code invalid continuation byte}, {@code unexpected end of data}, each at the byte
 * offset where the bad sequence starts). Overlong forms, surrogates (ED A0..BF) and
 * code points above U+10FFFF are rejected, as in every strict decoder.
 */
final class Utf8 {
    /** The bytes are not valid UTF-8; the message gives the reason and the offset. */
    static final class DecodeException extends Exception {
        private static final long serialVersionUID = 1L;

        DecodeException(String message) {
            super(message);
        }
    }

    private Utf8() {
    }

    /** Decodes {@code length} bytes of {@code data} from absolute index {@code from}. */
    static String decode(ByteBuffer data, int from, int length) throws DecodeException {
        StringBuilder out = new StringBuilder(length);
        int i = 0;
        while (i < length) {
            int lead = data.get(from + i) & 0xff;
            if (lead < 0x80) {
                out.append((char) lead);
                i++;
                continue;
            }
            int needed;
            int low = 0x80;
            int high = 0xbf;
            if (lead >= 0xc2 && lead <= 0xdf) {
                needed = 1;
            } else if (lead >= 0xe0 && lead <= 0xef) {
                needed = 2;
                low = lead == 0xe0 ? 0xa0 : 0x80; // no overlong forms
                high = lead == 0xed ? 0x9f : 0xbf; // no surrogates
            } else if (lead >= 0xf0 && lead <= 0xf4) {
                needed = 3;
                low = lead == 0xf0 ? 0x90 : 0x80;
                high = lead == 0xf4 ? 0x8f : 0xbf; // nothing above U+10FFFF
            } else {
                throw new DecodeException("invalid start byte at byte " + i);
            }
            int codePoint = lead & (0x3f >> needed);
            for (int k = 1; k <= needed; k++) {
                if (i + k >= length) {
                    throw new DecodeException("unexpected end of data at byte " + i);
                }
                int next = data.get(from + i + k) & 0xff;
                if (next < (k == 1 ? low : 0x80) || next > (k == 1 ? high : 0xbf)) {
                    throw new DecodeException("invalid continuation byte at byte " + i);
                }
                codePoint = (codePoint << 6) | (next & 0x3f);
            }
            out.appendCodePoint(codePoint);
            i += needed + 1;
        }
        return out.toString();
    }
}
