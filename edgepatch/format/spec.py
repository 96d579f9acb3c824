"""The edgepatch file format, version 2, and how a delta is applied to a base.

This docstring is the specification. A reader in another language must be
writable from it alone; the Java loader (``android_demo/patchloader``) is one.
Sections, in order: *Container*, *Verification order*, *Site naming*, *Float
delta*, *int8 delta*, *Golomb-Rice codes*, *Layouts and head padding*, *Bases*,
*Applying a float delta*, *Applying an int8 delta*, *Constants*, *Python modules*.

Container
---------
A file of the format is a container of named tensors. Its kind (``file_kind``)
says what the tensors mean: ``"delta"`` (a float task delta, *Float delta*),
``"int8_delta"`` (*int8 delta*) or ``"patch"`` (a training patch; free-form meta).

All integers are unsigned little-endian. Offsets are in bytes.

====================  ========  =============================================
bytes                 field     meaning
====================  ========  =============================================
0 .. 8                magic     ``MAGIC`` = ASCII ``EDGEPTCH``
8 .. 12               u32       version: writers write ``FORMAT_VERSION`` = 2;
                                readers accept 1 and 2 (version history
                                below) and reject any other
12 .. 16              u32  H    header_len: length of the header field
16 .. 16+H            header    UTF-8 JSON object, then ASCII spaces (0x20)
16+H .. 16+H+P        payload   P = header["payload_bytes"] bytes of tensors
16+H+P .. 16+H+P+32   trailer   SHA-256 of every byte before the trailer
====================  ========  =============================================

Version history: 1, the first, held ``task.preprocessing`` as one scalar
scale and offset, channels implicitly RGB. 2 made it per channel (three
scales and offsets) with a channel order and the optional resize filter
(*Float delta*); nothing else changed. Readers of version 2 also read version 1 files, as *Float delta*
says; a version 1 reader refuses version 2 files at step 3.

The file is exactly ``16 + H + P + 32`` bytes. H is a multiple of
``HEADER_ALIGN`` (16), so the payload starts 16-byte aligned;
``MIN_HEADER_BYTES`` (16) <= H <= ``MAX_HEADER_BYTES`` (1 MiB). A file is at
most ``MAX_FILE_BYTES`` (1 GiB) and at least ``MIN_FILE_BYTES`` (64) bytes.

The whole header field is one RFC 8259 JSON text whose value is an object
(JSON allows whitespace around the value; writers pad with spaces only).
Readers reject: invalid UTF-8, duplicate keys in any object, the non-JSON
constants NaN/Infinity, numbers that overflow a double, nesting deeper than
the reader's parser allows. An *integer* below is a JSON number written
without fraction or exponent (``true``/``false`` are not integers).

Top-level keys, all required, no others allowed:

* ``"file_kind"``: one of ``FILE_KINDS``: ``"delta"``, ``"patch"``,
  ``"int8_delta"``. The reader is told which kind(s) it expects and rejects
  the others. A *task delta* file is a ``"delta"`` or an ``"int8_delta"``; a
  loader that takes either reads and verifies the file once, then applies
  the rules of the kind it found.
* ``"payload_bytes"``: integer P, 0 <= P <= ``MAX_FILE_BYTES``.
* ``"tensors"``: array of at most ``MAX_TENSORS`` (8192) entries.
* ``"meta"``: object. For ``"patch"`` files it is free-form; for the delta
  kinds its content is given under *Float delta* and *int8 delta*.

Each tensor entry is an object with exactly these keys:

* ``"name"``: string of 1..``MAX_NAME_BYTES`` (256) bytes once encoded as
  UTF-8 (so no unpaired surrogate escape), unique.
* ``"dtype"``: a key of the dtype table below.
* ``"shape"``: array of at most ``MAX_RANK`` (4) integers, each
  0..``MAX_FILE_BYTES``. ``[]`` is a scalar (one element).
* ``"offset"``: integer 0..``MAX_FILE_BYTES``, relative to the payload
  start, a multiple of ``ALIGN`` (8).
* ``"nbytes"``: integer 0..``MAX_FILE_BYTES``, equal to product(shape) times
  the itemsize. (Compute the product with overflow checks; a product above
  ``MAX_FILE_BYTES`` can never match.)

Entries are sorted by offset and do not overlap: each offset is >= the end
(offset + nbytes) of the entry before it, and the last end is <= P. Payload
bytes that belong to no tensor are 0x00. Each tensor is stored as the raw
little-endian C-order (row-major) array.

=========  ========  ========
dtype      itemsize  numpy
=========  ========  ========
float32    4         ``<f4``
float16    2         ``<f2``  (IEEE 754 binary16)
int32      4         ``<i4``
int8       1         ``i1``
uint8      1         ``u1``
=========  ========  ========

Float tensors hold only finite values (no NaN, no +-Inf).

Writers are canonical, so equal inputs give equal bytes: tensors in the
caller's order (for a delta: the order E under *Float delta*, all in one
dtype), each at the previous end rounded up to ``ALIGN``;
P = the last end rounded up to ``ALIGN`` (0 without tensors); the JSON has
sorted keys, no whitespace (separators ``,`` and ``:``), only ASCII
(``\\uXXXX`` escapes), then space padding to a multiple of 16. Writes are
atomic (temp file in the same directory, fsync, rename) and validate with
the reader's own rules first.

Verification order
------------------
A reader checks in this order and stops at the first failure. Each failure
is one typed error (the names below; a loader in another language has one
class per name); its message starts with the file path (``<bytes>`` for
in-memory data) and gives the offending value. Which check fails first, and
its error class, are part of this spec; the message wording is not. Within
an object, missing keys are reported in the order listed here, then unknown
keys in sorted order.

1.  The path exists and is a regular file (``MissingFileError``); it is
    opened without blocking (a FIFO or device is refused, never read).
2.  size >= ``MIN_FILE_BYTES`` (``TruncatedFileError``), then
    size <= ``MAX_FILE_BYTES`` (``DeltaFormatError``). The size comes from
    the file system before anything is read. Readers then read the 16
    preamble bytes and the H header bytes only, and the rest only after
    step 5 found the size to be what the header promises.
3.  magic (``DeltaFormatError``), then version (``DeltaFormatError``).
4.  ``MIN_HEADER_BYTES`` <= H <= ``MAX_HEADER_BYTES`` and H % 16 == 0
    (``HeaderError``), then 16 + H + 32 <= size (``TruncatedFileError``).
5.  Parse the header. Only if it parses to an object whose
    ``payload_bytes`` is a valid integer: size == 16 + H + P + 32,
    ``TruncatedFileError`` when shorter, ``DeltaFormatError`` when longer.
    If it does not parse, its error waits for step 7, so a corrupted
    header is reported as a checksum mismatch.
6.  SHA-256 of bytes [0, size - 32) equals the last 32 bytes
    (``ChecksumMismatchError``).
7.  The header parses (``HeaderError``), is an object, has exactly the
    top-level keys, ``file_kind`` is known and the expected one,
    ``payload_bytes`` valid, ``meta`` an object, ``tensors`` an array of at
    most ``MAX_TENSORS`` (all ``HeaderError``).
8.  Each entry in order (``HeaderError``): an object with exactly its keys;
    name; name unique; dtype; shape; offset and nbytes integers; the
    product of the dimensions, zeros counted as 1, <= ``MAX_TENSOR_ELEMENTS``
    (so an empty tensor cannot declare [0, 2^30, 2^30, 2^30]); nbytes ==
    product(shape) * itemsize; offset % ``ALIGN`` == 0; offset >= previous
    end; offset + nbytes <= P.
9.  Payload bytes outside every tensor are zero (``DeltaFormatError``).
10. Float tensors are finite (``NonFiniteError`` naming the tensor).
11. The kind's own rules: for ``"delta"`` files the step 11 checks under
    *Float delta* (``HeaderError`` for structure, ``ShapeMismatchError`` for
    shapes); for ``"int8_delta"`` files those under *int8 delta*.

No number from the file is used to allocate or index before it has been
checked against the actual file size by the steps above.

Integrity, not authenticity. The trailer is a SHA-256 that anyone can
recompute after editing a file, and ``base_sha256`` names a base that anyone
can hash; the checks above make a loose delta *well-formed*, not *genuine*.
A delta forged for a base of the same architecture passes every step and
gives a wrong model. Authenticity comes from a signature: a delta inside a
verified bundle (``edgepatch.ship``), or a loose delta with a detached
signature ``<delta>.sig`` beside it, the same JSON document as a bundle's
``manifest.sig`` (``{"algorithm": "ed25519", "key_id": ..., "signature":
...}``) over the delta file's exact bytes. A loader given trusted keys
checks the signature before it reads the delta, and refuses a delta without
one (``SignatureError``); a loader given none checks integrity only.

Site naming
-----------
A *site* is one conv, depthwise conv or dense (head) layer of the model,
named by its Keras layer name. Its tensors are its *roles*: ``scale``,
``bias`` and ``kernel``. The tensor that holds role R of site S is named
``S + "/" + R`` (e.g. ``"block_1_depthwise/kernel"``); a name is split into
site and role at its **last** ``/``, and a name without ``/`` names no
role. The same rule names the site tensors inside a base (*Bases*). Site
names are 1..``MAX_SITE_NAME_BYTES`` (249) bytes of UTF-8, so that the
longest role name, ``S + "/kernel"``, fits ``MAX_NAME_BYTES``.

Float delta
-----------
``meta`` of a ``"delta"`` file is an object with exactly these keys::

    {"task": {"name": str, "classes": [str, ...], "resolution": int,
              "preprocessing": {"channels": "rgb" | "bgr",
                                "scale": [number, number, number],
                                "offset": [number, number, number],
                                "resize": "bilinear"}},
     "kinds": [str, ...],
     "base_sha256": {format: hex, ...},
     "sites": [[name, op, channels, roles], ...]}

* task.name: non-empty string. task.classes: non-empty array of unique
  non-empty strings. task.resolution: integer ``MIN_RESOLUTION`` (8) ..
  ``MAX_RESOLUTION`` (1024). Patches and int8 deltas share this ``task``
  object. Why 1024: a loader allocates activations for the resolution the
  delta names, and they grow with its square. MobileNetV2 1.0 took 2.0 GB of
  RSS at 4096 (a 74 KB delta), so about 2.0 GB / 16 = 128 MB at 1024, the
  most a phone app can spend on one task; a 1024 x 1024 float32 input alone
  is 12 MiB.
* task.preprocessing: how a decoded image (RGB, pixel values 0..255) becomes
  the model input. ``channels`` is the channel order the model wants,
  ``"rgb"`` or ``"bgr"``; ``order`` is (0, 1, 2) for ``"rgb"`` and (2, 1, 0)
  for ``"bgr"`` (model channel 0 is the image's blue). ``scale`` and
  ``offset`` are arrays of exactly 3 numbers, in the model's channel order:
  ``input[..., c] = pixel[..., order[c]] * scale[c] + offset[c]``, computed
  in float32 (one multiplication, then one addition). Each scale is finite
  with ``1e-30 <= |scale| <= 1e6`` (never 0 or denormal); each offset finite
  with ``|offset| <= 1e6``. ``resize`` (optional; writers write it, a file
  without it means ``"bilinear"``): how the decoded image is brought to
  ``resolution`` x ``resolution``, one of ``"bilinear"`` (below). Checked in
  order: the keys (``channels``, ``offset``, ``scale`` required, ``resize``
  allowed), channels, resize (``meta.task.preprocessing.resize must be one
  of 'bilinear', got ...``), then scale and offset, each element in order. A
  version 1 file holds instead ``{"scale": number, "offset": number}`` (the
  same bounds), read as ``channels = "rgb"`` with that scale and offset for
  all three channels, resized ``"bilinear"``. E.g. ``keras.applications``' ``tf`` mode
  is rgb, scale 1/127.5, offset -1; ``caffe`` is bgr, scale 1, offset minus
  the ImageNet means (103.939, 116.779, 123.68).
* resize ``"bilinear"`` (Pillow's ``Image.BILINEAR``, one axis at a time): a
  triangle filter whose support grows with the downscale factor, so it
  averages, not skips, pixels when it shrinks. The image (8-bit RGB, whole,
  no crop, aspect not kept) is resampled along x to width R, then that
  result along y to height R; an axis already R long is left as is. One axis
  of n pixels to m: ``scale = n / m``, ``fs = max(scale, 1)``, ``ss = 1 /
  fs``, ``support = fs`` (all float64). Output pixel i has ``center = (i +
  0.5) * scale``, ``lo = max(trunc(center - support + 0.5), 0)``, ``hi =
  min(trunc(center + support + 0.5), n)``; for j in lo..hi-1, ``t = |(j -
  center + 0.5) * ss|`` (the subtraction ``j - center`` first), ``w[j] = 1 -
  t`` if t < 1 else 0; ``total`` is their sum in j order, and each ``w[j] /
  total`` (if total != 0) becomes the integer ``k[j] = trunc(0.5 + w[j] *
  2^22)``. Then per channel ``out[i] = clamp((2^21 + sum k[j] * p[j]) >> 22,
  0, 255)`` in 32-bit integers (arithmetic shift), p the pixels of that row
  (x pass) or column (y pass). The x pass's 8-bit result feeds the y pass.
* kinds: non-empty array of unique non-empty strings (patch kinds private to
  this task, e.g. ``"scale_bias"``, ``"logits"``).
* base_sha256: non-empty object mapping a runtime format name (e.g.
  ``"tflite"``, ``"onnx"``) to the lowercase hex SHA-256 (64 characters) of
  the exact base file bytes the delta was made for.
* sites: array of 1..``MAX_SITES`` (8192) site entries. Their array order is
  the *site order* used below. Each entry is an array of exactly four
  values, e.g. ``["block_1_depthwise", "depthwise", 96, "scale+bias"]``:

  - name: the site (*Site naming*), unique within ``sites`` (exact string
    comparison).
  - op: one of ``SITE_OPS``: ``"conv"``, ``"depthwise"``, ``"dense"``.
  - channels: integer 1..``MAX_FILE_BYTES``, the site's output channels O.
  - roles: which of the site's tensors the delta holds. It is exactly one
    of the five ``ROLE_SETS`` strings ``"scale"``, ``"bias"``,
    ``"scale+bias"``, ``"kernel"``, ``"kernel+bias"``. Compare whole
    strings; a string lists its roles joined by ``+`` in the order scale,
    kernel, bias. No set has both scale and kernel: a kernel replaces the
    base kernel in full, so it takes no scale.

The roles of a site with output channels O (how a loader uses them is under
*Applying a float delta*):

* scale: [O]; multiplies the base's folded kernel per output channel.
* bias: [O]; replaces the base's folded bias.
* kernel: the full folded kernel, in the canonical layout (*Layouts and head
  padding*): conv [H, W, I, O] and depthwise [H, W, C, M] (rank 4), dense
  [I, O] (rank 2). Its output channels are the last axis, or C * M for
  depthwise, and equal O.

Scale and bias vectors are packed: each is stored as one tensor over all
sites. From ``sites``, build the list E of expected tensor names, in order:

1. ``"scale"``, if at least one site's roles include scale. It has rank 1,
   and its length is the sum of the channels of those sites.
2. ``"bias"``, likewise for the sites whose roles include bias.
3. The kernel tensor name of each site whose roles include kernel, in site
   order. The rank is 4 for conv and depthwise and 2 for dense. Its output
   channels equal the site's channels.

The file's tensors are exactly E, in E's order. Each is float32 or float16
(``DELTA_DTYPES``); they need not share a dtype. Sums of channels fit a
signed 64-bit integer (at most 8192 sites of at most 2^30 channels), as does
C * M.

Unpacking: keep one cursor for ``"scale"`` and one for ``"bias"``, both
starting at 0. Visit the sites in site order, and each site's roles in the
order scale, bias, kernel:

* For scale or bias, the site's vector (named by *Site naming*) is the
  elements [cursor, cursor + channels) of that packed tensor. Then add
  channels to the cursor.
* For kernel, the site's kernel is the stored tensor of that name.

The length checks below make every cursor end exactly at its tensor's
length. Order of the step 11 checks:

a. The meta keys as listed above: task, kinds, base_sha256, sites. For
   sites, check first that it is an array of 1..``MAX_SITES``. Then, for
   each entry in order: it is a 4-element array, then name, name unique,
   op, channels, roles. All of step a raises ``HeaderError``.
b. Each tensor in file order: the dtype is float32 or float16
   (``HeaderError``); the name is in E (``HeaderError``); the rank
   (``ShapeMismatchError``); then, for ``"scale"``/``"bias"``, the length
   equals the declared sum, and for a kernel, its output channels equal the
   site's channels (both ``ShapeMismatchError``).
c. Every name of E is present. Report the first missing name, in E's order
   (``HeaderError``).
d. The tensors are in E's order. Report the first position that differs
   (``HeaderError``).
e. The head: a ``dense`` site is the task's classifier head, so each dense
   site's channels equal the number of ``task.classes``
   (``ShapeMismatchError``); a head wider or narrower than the class list
   would show a padded column as a label, or shift the labels.
f. Site scales: every value of ``"scale"`` (as float32), in order, has
   ``MIN_ABS_SITE_SCALE`` (1e-12) <= ``|value|`` <= ``MAX_ABS_SITE_SCALE``
   (1e12) (``NonFiniteError`` naming the site and its channel): 0 or a
   denormal erases the channel, and a ratio of BN multipliers 12 decades
   from 1 is no trained task. (The base kernel times a scale can still
   overflow: *Applying a float delta*, step 3.)

After these checks every site has at least one tensor, no site has both a
scale and a kernel, and all of a site's tensors have its channel count.

int8 delta
----------
An int8 base and a task's int8 model come from the same converter on the
same BN-free graph, so they have the same tensors in the same order. With
per-channel symmetric weight quantization, a per-channel scale ``r`` of the
task changes only the weight scales (``scale * |r|``; int8 values keep their
magnitude and flip sign where ``r < 0``). An ``"int8_delta"`` file therefore
holds, keyed by tensor index in the base (structure, not names):

- new quantization parameters of tensors whose scale or zero point differ
  (weights, biases and the task's calibrated activation ranges);
- the raw bytes of tensors whose data differ (int32 biases, sign-flipped or
  re-learned int8 kernels, the head).

Tensors (all names exact; ``{index}`` is a decimal integer without leading
zeros, at most 9 digits):

- ``"scale"``: float32 [N], the concatenated new scale vectors, in ``quant`` order;
- ``"zero_point"``: int32 [M], the concatenated new zero points, in ``quant`` order;
- ``"data/{index}"``: uint8 [n], the new raw bytes of tensor ``index``;
- ``"at/{index}"`` (int32 [n]) and ``"put/{index}"`` (uint8 [n]), of equal
  length: a sparse edit of tensor ``index``: byte ``at[k]`` of its data
  becomes ``put[k]`` (positions ascending, unique, >= 0); used when few
  bytes change, e.g. a kernel whose int8 values changed only where rounding
  or a sign did. A tensor has data or edits, not both;
- with ``"refold"`` in meta: ``"refold/codes"`` (uint8 [n]),
  ``"refold/rice_k"`` (uint8 [entries, 2]) and ``"refold/bias_step"``
  (float32 [entries], finite and > 0), below.

``meta`` is an object with exactly: ``"task"`` (as in a float delta),
``"base_sha256"`` (``{"tflite_int8": hex}``: the exact int8 base bytes, 64
lowercase hex digits), ``"quant"``: an array of ``[tensor_index,
scale_count, zero_point_count]`` (non-negative integers), indices ascending
and unique; a count is the base tensor's vector length, or 0 when that
vector is unchanged. The sums of the counts equal the lengths of
``"scale"`` and ``"zero_point"``. Optionally ``"refold"``.

Compact refold (``"refold"`` in meta). Shipping a conv's new weight scales,
bias scales and int32 biases exactly costs 12 bytes per channel. Instead, a
refold entry ``[weight_index, bias_index, input_index, channels]``
(non-negative integers, channels > 0; weight indices ascending and unique,
bias indices unique) lets the loader recompute them from the base and two
int16 codes per channel, ``s`` and ``b``, at about int8's own precision:

- ``r`` = the float32 whose bit pattern is ``0x3F800000 + s * 2**16``
  (the channel's factor, 7 mantissa bits; ``|s| <= 16255``, so ``r > 0``);
- weight scale = float32(base weight scale * r);
- bias scale = float32(input scale * weight scale), the input's scale being
  the task's (after ``quant``);
- int32 bias = round-half-even((base bias * base bias scale + b * step) /
  bias scale), all in float64 with no fused multiply-add, clamped to int32;
  ``step`` is the entry's ``"refold/bias_step"`` (a quarter of the task's
  output quantum).

``"refold/codes"`` holds Golomb-Rice runs (next section): per entry in
order, its ``s`` codes (one run of ``channels``) then its ``b`` codes (one
more run), with the two runs' parameters in that entry's row of
``"refold/rice_k"``. A refolded weight or bias has no scales in ``quant``
and the bias no data or edits. A negative factor is a positive ``r`` plus
the sign-flipped int8 kernel bytes in data or edits.

A reader checks the container first (steps 1-10), then these rules, in this
order (``HeaderError`` unless named): meta keys; task; base_sha256; quant;
tensor names; ``scale``/``zero_point`` dtypes, ranks and the quant sums;
every scale, in order, finite with ``MIN_QUANT_SCALE`` (1e-15) <= scale <=
``MAX_QUANT_SCALE`` (1e6) (``NonFiniteError``: a bias scale, input x weight,
stays a normal float32), then every zero point within ``MIN_ZERO_POINT``
..``MAX_ZERO_POINT`` (-128..127, the int8 range); each
data/at/put tensor in sorted name order; data and edits disjoint; the refold
entry and its three tensors (``NonFiniteError`` for a bad bias step), the
codes decode exactly, every ``|s| <= 16255``; no refolded tensor also in
quant scales or bias data. Applying checks the rest (*Applying an int8
delta*).

Golomb-Rice codes
-----------------
A run of ``n`` int16 values with parameter ``k`` (0..15) is coded as:

1. each value ``v`` mapped to ``u = 2v`` (v >= 0) or ``u = -2v - 1`` (v < 0);
2. the ``n`` remainders ``u mod 2**k``, ``k`` bits each, most significant first;
3. the ``n`` quotients ``u >> k`` in unary: that many 1 bits, then a 0 bit.

Runs follow each other bit by bit; bits fill each byte from its most
significant bit, and the last byte is padded with 0 bits. A decoder
rejects, in this order: more values than bits in the data; a ``k`` outside
0..15; bits that end inside a run's remainders or inside its quotients; a
mapped value above 0xFFFF (outside int16); and anything left over after the
last value other than the zero padding of the last byte.

Layouts and head padding
------------------------
The *canonical* layout of a kernel is Keras's; deltas store it. Each runtime
stores its own:

=========  ========================  ==============  ===============
op         canonical (Keras, delta)  TFLite          ONNX
=========  ========================  ==============  ===============
conv       [H, W, I, O]              [O, H, W, I]    [O, I, H, W]
depthwise  [H, W, C, M]              [1, H, W, C*M]  [C*M, 1, H, W]
dense      [I, O]                    [O, I]          [I, O] (MatMul)
=========  ========================  ==============  ===============

The *output axis* of a runtime layout (``OUT_AXIS``), along which a
per-channel scale multiplies the kernel: TFLite conv 0, depthwise 3, dense
0; ONNX conv 0, depthwise 0, dense 1. Depthwise output channel ``c * M + m``
is canonical element ``[.., .., c, m]``.

Head padding. A base serves tasks with different class counts: its head
(the dense site) is as wide as its widest task, the *head width* W, which a
loader reads as the length of the bias of the base's first dense site (0
when it has none). A task head with K <= W classes is padded with zero
columns: kernel [I, K] becomes [I, W] and bias [K] becomes [W], so the
extra logits are 0 and the runner keeps only the first K. K > W is refused
(``ShapeMismatchError``). The base itself is built with its heads padded
the same way.

Bases
-----
A base is the BN-folded model, one file per runtime format. Its site
tensors are found by structure and exact names, never by substring:

* TFLite (format ``"tflite"``). Walk the operators of subgraph 0 in order.
  A CONV_2D (op ``conv``), DEPTHWISE_CONV_2D (``depthwise``) or
  FULLY_CONNECTED (``dense``) operator with at least 3 inputs, inputs 1 and
  2 present (>= 0), whose input 1 tensor is named as site S's kernel, is
  site S; its input 2 must be named as S's bias, and S must not appear on
  two operators. Each site tensor is float32 constant data read by exactly
  one operator input, and its bytes overlap no other tensor's. No site at
  all is an error too (all ``BaseModelError``).
* int8 TFLite (format ``"tflite_int8"``). A base is int8 when it has at
  least one CONV_2D or DEPTHWISE_CONV_2D and every such operator's input 1
  tensor is int8 (an omitted input, -1, indexes from the end). It has no
  sites; int8 deltas address its tensors by index.
* ONNX (format ``"onnx"``). Walk the graph's nodes in order. A Conv or
  MatMul node with at least 2 inputs whose input 1 is named as site S's
  kernel is site S: MatMul is ``dense``; Conv with attribute group > 1 and
  one input channel per group (kernel dims ``[O, 1, H, W]``) ``depthwise``;
  any other Conv (a grouped conv included) ``conv``. S's kernel and bias
  initializers must exist, be float32 and be stored as raw_data; S must not
  appear on two nodes.

Which layers are sites. The converter first rewrites the model into a
canonical form (``edgepatch.train.graph``): nested sub-models inlined, a
SeparableConv2D split into its depthwise site ``<name>_depthwise`` and a 1x1
conv site ``<name>``, a Conv2D with one input channel per group rebuilt as a
depthwise conv, and a BatchNormalization that follows no linear conv feeding
only it given a 1x1 identity depthwise conv ``<bn>_affine`` in front, into
which it folds. Such an *affine site* is a ``depthwise`` site whose kernel
``[1, 1, C, 1]`` and bias are the BN's per-channel multiply and add; a delta
writes it like any other site. A site no patch kind can write (a conv
without BN) whose bias the runtime converter changed (it fused a following
constant add) is left unnamed: it is a plain constant of the base, and a
delta naming it is refused as naming a site the base lacks. Input
Rescaling/Normalization layers are constants of the base: multiply/add
operators, or, where a converter would fuse them into a site's kernel,
constant 1x1 depthwise convs named like sites, which no patch kind writes.

Reading a .tflite base. A .tflite file is a FlatBuffer holding a TFLite
``Model`` (TFLite's ``schema.fbs``). All integers are little-endian:

- bytes 0..4: u32 position of the root table (the ``Model``);
  bytes 4..8: the file identifier ``TFL3``.
- A table at position T starts with an i32 ``s``; its vtable is at ``T - s``.
  The vtable holds u16 values: its own byte size, the table's byte size, then
  one per field id: the field's offset from T, 0 when the field is absent
  (the schema default applies).
- A reference field (table, vector, string) at position P holds a u32 ``r``;
  the referenced object starts at ``P + r``.
- A vector or string is a u32 element count followed by the elements. A vector
  of tables holds u32 references, each relative to its own position.

Fields a loader reads (field id, name, type):

- Model: 1 operator_codes [OperatorCode], 2 subgraphs [SubGraph], 4 buffers [Buffer]
- SubGraph: 0 tensors [Tensor], 1 inputs [i32], 2 outputs [i32], 3 operators [Operator]
- Tensor: 0 shape [i32], 1 type i8, 2 buffer u32, 3 name string, 4 quantization
  QuantizationParameters, 7 shape_signature [i32]
- QuantizationParameters: 2 scale [f32], 3 zero_point [i64]
- Buffer: 0 data [u8], 1 offset u64, 2 size u64
- Operator: 0 opcode_index u32, 1 inputs [i32], 2 outputs [i32]
- OperatorCode: 0 deprecated_builtin_code i8, 3 builtin_code i32; the code is
  the larger of the two (old files set only the first, new ones both).

A buffer's bytes lie in one of two layouts. Inline (the default): ``data`` is a
``[u8]`` vector inside the flatbuffer. External (``_experimental_use_buffer_offset``
and files over 2 GB): ``offset > 1`` and ``size`` give an absolute byte range
after the flatbuffer. Every position read from the file is checked against
the file size before use; any inconsistency is a ``BaseModelError``.

Applying a float delta
----------------------
A float base takes ``"delta"`` files only (an int8 delta for a float base is
a ``WrongBaseError``). In this order, before anything is written:

1. Fingerprint: ``base_sha256`` has the base's format and its value is the
   SHA-256 of the base file's bytes (``WrongBaseError`` otherwise).
2. The class count: when the base has a head (W > 0), the task's number
   of classes is at most W (``ShapeMismatchError``). A delta with a head
   already has one output per class (*Float delta*, step 11 e); a delta
   without one uses the base's head, whose first outputs are the task's.
   Then, for each site of the delta, in site order: the base has the site
   (``ShapeMismatchError``) with the same op (``ShapeMismatchError``); then
   its update, computed in the base's runtime layout:

   - dense site with a kernel: kernel and bias (zeros when the delta has no
     bias) are padded to the head width (*Layouts and head padding*);
     dense site with only a bias: the bias is padded;
   - a kernel is converted to the runtime layout and must have the base
     kernel's shape (``ShapeMismatchError``);
   - else a scale's length must equal the base kernel's size along the
     output axis (``ShapeMismatchError``);
   - a bias must have the base bias's shape (``ShapeMismatchError``).
3. Scale overflow rule, once every site passed step 2: for each scaled site
   in site order and each channel c in order, the product, in float64, of
   ``|scale[c]|`` and the largest ``|value|`` of the base kernel's channel c
   must not exceed the float32 maximum; the first that does is a
   ``NonFiniteError`` naming the site's scale tensor and c. (A loader that
   also takes deltas built in memory, which skipped the reader, checks the
   bounds of *Float delta* step 11 f first, in the same order.)

Then the patched model is a copy of the base bytes in which, for each site
of the delta:

- kernel: the task's kernel if the delta has one; else, with a scale, the
  *refold*: every base kernel value times the scale of its output channel,
  one float32 multiplication (so the result is bit-exact across loaders);
- bias: the task's bias if the delta has one, else the base's.

Sites the delta does not name keep the base's values. Everything outside
the site tensors is the base's bytes. A loader that reuses buffers must
restore the base's values at every site a previous task wrote.

Applying an int8 delta
----------------------
An int8 base takes ``"int8_delta"`` files only (a float delta is a
``WrongBaseError``), and ``base_sha256["tflite_int8"]`` must be the SHA-256
of its bytes (``WrongBaseError``). Its head width W is the last dimension
of subgraph 0's first output; the task's class count must be at most W
(``ShapeMismatchError``). An int8 delta may write only what a patch owns:
the *owned* tensors are inputs 1 (weights) and 2 (bias) of every CONV_2D,
DEPTHWISE_CONV_2D and FULLY_CONNECTED operator with inputs 0, 1 and 2
present; quantization may also change on *activations* (tensors without
constant data). Then, into a copy of the base bytes, in this order (a
tensor index >= the base's tensor count is a ``ShapeMismatchError``, as is
every ownership rule below):

1. each ``quant`` entry in order: a tensor with constant data is owned,
   and its zero points in the delta are all 0 (weights and biases are
   symmetric); each non-zero count equals the length of that base tensor's
   vector (``ShapeMismatchError``); an activation's new scales are each
   within 1/``MAX_ACTIVATION_SCALE_RATIO`` .. ``MAX_ACTIVATION_SCALE_RATIO``
   (64) times the base's (``NonFiniteError``: the ratio of an operator's
   input and output scales must stay where interpreters accept it; TFLite
   aborts the process on an ADD whose ratio passes 2^19); the scales
   (float32) and zero points (int32 in the delta, int64 in the base)
   replace them;
2. each ``data/{index}``: the tensor is owned; it has constant data on a
   buffer no other tensor uses (``BaseModelError``), of the same byte size
   (``ShapeMismatchError``); its bytes are replaced (so MEAN's axes or any
   other constant can never be written);
3. each edit: the same checks on the tensor, and the last position is inside
   its data (``ShapeMismatchError``); byte ``at[k]`` becomes ``put[k]``;
4. each refold entry in order: some owning operator has inputs 0, 1 and 2
   equal to its input, weight and bias indices; the kernel is int8 with ``channels`` scales,
   the bias int32 of ``4 * channels`` bytes with ``channels`` scales, the
   input has one scale (``ShapeMismatchError``). The base's own weight
   scales, bias and bias scales are read from the original bytes, the
   input scale from the copy (after step 1); the recomputed weight and bias
   scales must be finite and within ``MIN_QUANT_SCALE``..``MAX_QUANT_SCALE``
   (``NonFiniteError``); they and the int32 biases are written into the copy.

Scales inside these bounds can still make a pair of tensors that an
interpreter refuses (XNNPACK bounds each operator's requantization scale).
A loader that runs the model reports such a refusal as a ``BaseModelError``
naming the task, never as a crash.

Constants
---------
Each constant's value, and the module that defines it (the Python code uses
only these definitions; ``tests/format/test_spec.py`` checks this table)::

    MAGIC                  b"EDGEPTCH"  edgepatch.format.container
    FORMAT_VERSION         2            edgepatch.format.container
    HEADER_ALIGN           16           edgepatch.format.container
    ALIGN                  8            edgepatch.format.container
    MIN_HEADER_BYTES       16           edgepatch.format.container
    MAX_HEADER_BYTES       1048576      edgepatch.format.container
    MIN_FILE_BYTES         64           edgepatch.format.container
    MAX_FILE_BYTES         1073741824   edgepatch.format.container
    MAX_TENSORS            8192         edgepatch.format.container
    MAX_NAME_BYTES         256          edgepatch.format.container
    MAX_RANK               4            edgepatch.format.container
    MAX_TENSOR_ELEMENTS    268435456    edgepatch.format.container
    FILE_KINDS             ("delta", "patch", "int8_delta")    edgepatch.format.container
    TENSOR_ROLES           ("scale", "bias", "kernel")         edgepatch.format.names
    MAX_SITE_NAME_BYTES    249          edgepatch.format.names
    SITE_OPS               ("conv", "depthwise", "dense")      edgepatch.format.delta
    ROLE_SETS              ("scale", "bias", "scale+bias", "kernel", "kernel+bias")  edgepatch.format.delta
    DELTA_DTYPES           ("float32", "float16")              edgepatch.format.delta
    MAX_SITES              8192         edgepatch.format.delta
    MIN_RESOLUTION         8            edgepatch.format.task
    MAX_RESOLUTION         1024         edgepatch.format.task
    MIN_ABS_SCALE          1e-30        edgepatch.format.task
    MAX_ABS_PREPROCESSING  1000000.0    edgepatch.format.task
    MIN_ABS_SITE_SCALE     1e-12        edgepatch.format.delta_limits
    MAX_ABS_SITE_SCALE     1000000000000.0  edgepatch.format.delta_limits
    MIN_QUANT_SCALE        1e-15        edgepatch.format.int8_delta
    MAX_QUANT_SCALE        1000000.0    edgepatch.format.int8_delta
    MAX_ACTIVATION_SCALE_RATIO  64      edgepatch.format.int8_delta
    MIN_ZERO_POINT         -128         edgepatch.format.int8_delta
    MAX_ZERO_POINT         127          edgepatch.format.int8_delta
    SCALE_CODE_LIMIT       16255        edgepatch.format.int8_delta
    BIAS_STEPS_PER_QUANTUM 4            edgepatch.format.int8_delta
    MAX_K                  15           edgepatch.format.rice

Python modules
--------------
``edgepatch.format``: ``container`` (Container, Verification order 1-10),
``names`` (Site naming), ``task`` (the ``task`` object), ``delta`` (Float
delta), ``delta_limits`` (Float delta, step 11 e and f), ``int8_delta`` (int8 delta), ``rice`` (Golomb-Rice codes),
``layouts`` (Layouts and head padding). ``edgepatch.runtime``: ``files``
(reading a base or a task delta once), ``tflite_file`` (Reading a .tflite
base), ``tflite``/``onnx``/``tflite_int8`` (Bases), ``refold`` (Applying a
float delta), ``tflite_int8`` (Applying an int8 delta).
"""
