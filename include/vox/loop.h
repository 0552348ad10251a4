/*
 * vox/loop.h: the loop-nest description, its validation, a one-line text form, and the scalar
 * interpreter that is the oracle for the JIT code generator.
 *
 * A nest is one perfectly nested loop computing a generalised tensor contraction, after
 * LoopNest (Zlateski et al., "LoopStack", facebookresearch/loop_nest):
 *
 *     C[c(i)] = reduce over the loop points i of  combine(pre(A[a(i)]), B[b(i)])
 *     then    C = post(C) once every output element's reduction is complete
 *
 * where a(i) = sum_d i_d * stride_A[d] (likewise for B, C and the extra tensors).
 *
 * Dimensions. Up to VOX_NEST_MAX_DIMS named dimensions, each with a size > 0. A dimension along
 * which C's stride is 0 is a REDUCTION dimension; every other one is an output dimension. There
 * is no separate list of reduction axes: it is implied by C's strides.
 *
 * Strides (in elements, int64, negative allowed) are given per tensor and per dimension; 0 means
 * the tensor does not depend on that dimension. Any layout is a choice of strides (row or
 * column major, transposed, NCDHW, channel-blocked). A sliding window needs no im2col: give the
 * input a stride along both the output dimension and the kernel dimension (for a convolution
 * the input index is ox + kx, so A's stride along ox equals its stride along kx).
 *
 * Order. Up to VOX_NEST_MAX_ORDER (dimension, step) loops, outermost first. A dimension may
 * appear several times (splits). Loop p over dimension d walks the range that the enclosing
 * loop over d left (the whole [0, size) for d's first loop) in steps of `step`; each iteration
 * hands [i, min(i + step, end)) to the loops inside it. So a step that does not divide the range
 * makes a shorter tail iteration. The steps of one dimension must be non-increasing from the
 * outside in, and its innermost loop must have step 1; every dimension must appear.
 *   Example: order m:16 n:16 k:1 m:1 n:1 tiles C in 16x16 blocks with k outside the tile.
 * The interpreter applies the reduction in exactly this loop order, so it is also the reference
 * for the summation order of any code that runs the same order.
 *
 * Mode. Overwrite (the default): C is first set to the reduction's identity (0, -inf, +inf).
 * Accumulate: the reduction continues from C's existing values.
 *
 * Element-wise operations (table-driven, see vox_nest_eltwise_*): up to VOX_NEST_MAX_OPS pre-ops
 * applied, in order, to each value of A as it is read, and up to VOX_NEST_MAX_OPS post-ops applied
 * to each element of C once its reduction is complete. An op may take a constant (`param`) or a
 * tensor operand with its own strides; a post-op's tensor must have stride 0 along every
 * reduction dimension (a bias indexed by the output channel, say). The tensor operands are the
 * pointers extra[0], extra[1], ... in the order they appear: pre-ops first, then post-ops.
 *
 * Text form (one line; vox_nest_print writes exactly this, single spaces, canonical order):
 *
 *   nest    := "dims" dim+ ";" "order" loop+ ";" compute [";" "pre" op+] [";" "post" op+]
 *              [";" "accumulate"]
 *   dim     := NAME "=" INT                     size > 0
 *   loop    := NAME ":" INT                     dimension and step
 *   compute := "C" access REDUCE "A" access COMBINE "B" access
 *   REDUCE COMBINE pairs: "+=" "*" (plus-multiply), "max=" "*", "max=" "+", "min=" "*"
 *   access  := "[" [NAME ":" INT ("," NAME ":" INT)*] "]"    strides; unlisted dims have 0
 *   op      := OPNAME [access] ["(" FLOAT ")"]                  as the op's table entry needs
 *   NAME    := [A-Za-z_][A-Za-z0-9_]*  (at most VOX_NEST_NAME_MAX - 1 characters)
 *
 *   dims m=64 n=48 k=32; order m:16 n:16 k:1 m:1 n:1; C[m:48,n:1] += A[m:32,k:1] * B[k:48,n:1];
 *   post bias[n:1] relu
 *
 * The printer lists strides in dimension order and leaves out zero strides, and writes floats
 * with 9 significant digits, so print -> parse -> print gives the same string and print ->
 * parse gives an equal nest (vox_nest_equal). Blanks between tokens are free when parsing.
 *
 * Nothing here allocates except vox_nest_to_string. A struct vox_nest is a plain value: copy it
 * with `=`, compare it with vox_nest_equal.
 */
#ifndef VOX_LOOP_H
#define VOX_LOOP_H

#include "vox/core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define VOX_NEST_MAX_DIMS 12
#define VOX_NEST_MAX_ORDER 24
#define VOX_NEST_MAX_OPS 4
#define VOX_NEST_NAME_MAX 16
/* Extra tensor operands at most: every pre- and post-op could take one. */
#define VOX_NEST_MAX_EXTRA (2 * VOX_NEST_MAX_OPS)
/* Sizes and |strides| are capped so that every offset and point count fits in int64. */
#define VOX_NEST_MAX_SIZE (INT64_C(1) << 31)

/* The tensors of the contraction, as indices into vox_nest.strides. */
enum vox_nest_tensor { VOX_NEST_C = 0, VOX_NEST_A = 1, VOX_NEST_B = 2, VOX_NEST_TENSORS = 3 };

/* The (reduce, combine) pair. Add one: an enumerator here and a row in the table in nest.c. */
enum vox_nest_compute {
    VOX_NEST_PLUS_MUL = 0, /* C += A * B      identity 0    (FMA) */
    VOX_NEST_MAX_MUL,      /* C = max(C, A*B) identity -inf */
    VOX_NEST_MAX_PLUS,     /* C = max(C, A+B) identity -inf (tropical; max-pooling with B = 0) */
    VOX_NEST_MIN_MUL,      /* C = min(C, A*B) identity +inf */
    VOX_NEST_COMPUTE_COUNT
};

/* Element-wise operations. Add one: an enumerator here and a row in the table in nest.c. */
enum vox_nest_eltwise_kind {
    VOX_NEST_RELU = 0, /* max(x, 0) */
    VOX_NEST_ELU,      /* x > 0 ? x : expm1(x) */
    VOX_NEST_SIGMOID,  /* 1 / (1 + exp(-x)) */
    VOX_NEST_TANH,     /* tanh(x) */
    VOX_NEST_SCALE,    /* x * param */
    VOX_NEST_BIAS,     /* x + t, t from a tensor operand */
    VOX_NEST_MUL,      /* x * t, t from a tensor operand */
    VOX_NEST_ELTWISE_COUNT
};

struct vox_nest_dim {
    char name[VOX_NEST_NAME_MAX]; /* NUL-terminated identifier, unique in the nest */
    int64_t size;                 /* 1 .. VOX_NEST_MAX_SIZE */
};

struct vox_nest_loop {
    int dim;      /* index into vox_nest.dims */
    int64_t step; /* >= 1 */
};

struct vox_nest_eltwise {
    enum vox_nest_eltwise_kind kind;
    float param;                         /* the constant, for ops that take one */
    int64_t strides[VOX_NEST_MAX_DIMS];  /* the tensor operand's strides, for ops that take one */
};

struct vox_nest {
    int ndims;
    struct vox_nest_dim dims[VOX_NEST_MAX_DIMS];
    int norder;
    struct vox_nest_loop order[VOX_NEST_MAX_ORDER];
    int64_t strides[VOX_NEST_TENSORS][VOX_NEST_MAX_DIMS]; /* [tensor][dim], 0: independent */
    enum vox_nest_compute compute;
    bool accumulate; /* false: C starts at the identity; true: C's values are reduced into */
    int npre, npost;
    struct vox_nest_eltwise pre[VOX_NEST_MAX_OPS];  /* applied to A's values */
    struct vox_nest_eltwise post[VOX_NEST_MAX_OPS]; /* applied to C after the reduction */
};

/* ---- the operation tables -------------------------------------------------------------- */

struct vox_nest_compute_info {
    const char *name;    /* "plus_mul", ... */
    const char *reduce;  /* its token in the text form: "+=", "max=", "min=" */
    const char *combine; /* "*" or "+" */
    float identity;      /* of the reduction */
    float (*reduce_fn)(float c, float v);
    float (*combine_fn)(float a, float b);
};

struct vox_nest_eltwise_info {
    const char *name; /* its name in the text form */
    bool has_tensor;  /* takes a tensor operand (the next extra pointer) */
    bool has_param;   /* takes a constant */
    float (*fn)(float x, float t, float param);
};

/* NULL for a kind out of range. */
const struct vox_nest_compute_info *vox_nest_compute_info(enum vox_nest_compute c);
const struct vox_nest_eltwise_info *vox_nest_eltwise_info(enum vox_nest_eltwise_kind k);

/* ---- building and checking ------------------------------------------------------------- */

/* Zeroes *nest: no dims, no loops, plus-multiply, overwrite, no ops. */
void vox_nest_init(struct vox_nest *nest);
/* Appends a dimension; returns its index, or -1 (with nothing changed) if the nest is full or
 * the name is not a fresh identifier of < VOX_NEST_NAME_MAX characters. */
int vox_nest_dim_add(struct vox_nest *nest, const char *name, int64_t size);
/* Index of the dimension called `name`, or -1. */
int vox_nest_dim_find(const struct vox_nest *nest, const char *name);
/* Appends a loop (dimension index, step); returns false if the order is full. */
bool vox_nest_loop_add(struct vox_nest *nest, int dim, int64_t step);

/* Checks every rule above. VOX_INVALID_ARG with a message naming the rule and the dimension,
 * loop or tensor that breaks it. Never reads outside *nest, whatever its contents. C's strides
 * must not map two output points to one element: this is checked conservatively (sorted by
 * |stride|, each output dimension's stride must exceed the span of the smaller ones), which
 * accepts every dense layout, transposed or blocked. */
enum vox_status vox_nest_validate(struct vox_ctx *ctx, const struct vox_nest *nest);

/* Field-by-field equality of two nests (unused array slots are ignored). */
bool vox_nest_equal(const struct vox_nest *a, const struct vox_nest *b);

/* True for a reduction dimension (C's stride along it is 0). */
bool vox_nest_is_reduction(const struct vox_nest *nest, int dim);

/* ---- schedule transforms and their legality, for a tuner ------------------------------- */
/* The can_* queries assume a valid nest, do not copy it, and cost O(norder). They return false
 * with a static reason in *why_out (may be NULL) when the transform would break a rule. The
 * transforms apply a legal change in place and return VOX_INVALID_ARG (message on ctx) for an
 * illegal one, leaving the nest unchanged. */

/* Exchange loops i and j. */
bool vox_nest_can_swap(const struct vox_nest *nest, int i, int j, const char **why_out);
enum vox_status vox_nest_swap(struct vox_ctx *ctx, struct vox_nest *nest, int i, int j);
/* Split loop i = (d, s) into (d, step) at position i and (d, s) at i + 1: needs
 * s < step <= the enclosing step of d (any step > s for d's first loop) and room in the order. */
bool vox_nest_can_split(const struct vox_nest *nest, int i, int64_t step, const char **why_out);
enum vox_status vox_nest_split(struct vox_ctx *ctx, struct vox_nest *nest, int i, int64_t step);
/* Remove loop i, merging it into the next loop over the same dimension: needs one. */
bool vox_nest_can_merge(const struct vox_nest *nest, int i, const char **why_out);
enum vox_status vox_nest_merge(struct vox_ctx *ctx, struct vox_nest *nest, int i);

/* ---- text form ------------------------------------------------------------------------- */

/* Writes the text form of a valid nest into buf (always NUL-terminated if buf_len > 0) and its
 * length, without the NUL, into *len_out (may be NULL). VOX_INVALID_ARG if the nest is invalid
 * or buf_len <= that length (buf then holds a truncated prefix). buf = NULL only measures. */
enum vox_status vox_nest_print(struct vox_ctx *ctx, const struct vox_nest *nest, char *buf,
                               size_t buf_len, size_t *len_out);
/* The same into a new string, freed by the caller with vox_free(ctx, *str_out). */
enum vox_status vox_nest_to_string(struct vox_ctx *ctx, const struct vox_nest *nest,
                                   char **str_out);
/* Parses the text form and validates the result. A syntax error is VOX_FORMAT with the message
 * "column N: expected X, found 'Y'" (columns from 1); a well-formed but invalid nest is
 * VOX_INVALID_ARG with vox_nest_validate's message. *nest_out is written only on success. */
enum vox_status vox_nest_parse(struct vox_ctx *ctx, const char *text, struct vox_nest *nest_out);

/* ---- interpreter ----------------------------------------------------------------------- */

/* Runs a valid nest in plain scalar C, float32, in exactly the order the loops give. Each
 * pointer is the element at index 0 of every dimension (with negative strides, point inside
 * the buffer; vox_nest_span gives the offsets touched). A and B are read-only; extra[k] is the
 * k-th tensor operand of the ops (NULL if there are none). Validates first: VOX_INVALID_ARG for
 * an invalid nest or a missing pointer. Does not allocate. */
enum vox_status vox_nest_interpret(struct vox_ctx *ctx, const struct vox_nest *nest, float *C,
                                   const float *A, const float *B, const float *const *extra);

/* The lowest and highest element offsets a stride vector reaches over the nest's dimensions
 * (for a buffer of hi - lo + 1 elements, pass base + (-lo)). */
void vox_nest_span(const struct vox_nest *nest, const int64_t *strides, int64_t *lo_out,
                   int64_t *hi_out);
/* Number of extra tensor operands the ops take. */
int vox_nest_extra_count(const struct vox_nest *nest);
/* Iteration points (the product of all sizes). */
double vox_nest_points(const struct vox_nest *nest);
/* Floating-point operations: 2 per point (combine and reduce), plus 1 per point for each pre-op
 * and 1 per output element for each post-op. */
double vox_nest_flops(const struct vox_nest *nest);
/* Compulsory memory traffic estimate in bytes: each tensor's footprint once (the smaller of
 * its span and the product of the sizes it depends on), C twice when accumulating. */
double vox_nest_bytes(const struct vox_nest *nest);

/* ---- compiled kernels (src/loop/codegen*.c, kernel.c) ---------------------------------- */
/* vox_nest_compile lowers a nest to x86-64 code (AVX2+FMA or AVX-512), after LoopNest:
 * vectorised along the innermost loop's dimension (or along a reduction dimension with unit
 * stride in A or B when that fills more lanes: horizontal sums at the store), C held in
 * registers from the outermost loop whose C tile fits the register budget, reduction loops
 * inside it run at run time (unrolled up to a limit), one code copy per distinct range state
 * (no 2^k tail copies), masked vector tails. Reduction loops above the tile (k blocks) reload
 * C except on their first iteration, which starts from the identity (no pass over C first),
 * and fuse the post-ops into their last. The ISA comes from the options or the context (VOX_ISA caps it);
 * VOX_ISA_REF, or a nest the generator cannot lower, gives a kernel that runs the
 * interpreter (info.jit = false). */

/* options.isa: 0 (VOX_KERNEL_ISA_AUTO, what a zeroed struct gives) is the context's ISA;
 * VOX_KERNEL_ISA(VOX_ISA_AVX2) etc. asks for one (it must be one the CPU has). */
#define VOX_KERNEL_ISA_AUTO 0
#define VOX_KERNEL_ISA(isa) ((int)(isa) + 1)

struct vox_kernel_options {
    int isa;      /* VOX_KERNEL_ISA_AUTO or VOX_KERNEL_ISA(an enum vox_isa) */
    int unroll;   /* vector ops in a fully unrolled reduction body; 0: 64 */
    int copies;   /* accumulators per C vector; 0: auto (>= 8 FMA chains), 1: off, <= 4 */
    int threads;  /* 0: the context's pool; 1: the calling thread only */
};

struct vox_kernel_info {
    bool jit;              /* false: the interpreter runs the nest */
    enum vox_isa isa;
    int lanes;             /* f32 lanes of a vector op (1 when scalar along the innermost dim) */
    bool reduction_vectors; /* vectors along a reduction dimension, summed across lanes at the
                             * store (GEMV, N = 1 matmuls, C strided along the innermost dim) */
    int tile_level;        /* the order position where C is loaded into registers */
    int64_t tile[VOX_NEST_MAX_DIMS]; /* the register tile's extent per dimension */
    int acc_vectors;       /* C vectors held in registers (the full tile) */
    int acc_copies;        /* accumulators per C vector */
    int unroll;            /* reduction-loop iterations unrolled in the innermost runtime loop */
    int vec_regs;          /* vector registers used at most */
    bool chunked;          /* the innermost loop was strip-mined: no C tile fits */
    bool post_fused;       /* post-ops applied in registers before the store */
    int parallel_dim;      /* the dimension split across threads, -1: none */
    double flops, bytes;   /* vox_nest_flops / vox_nest_bytes */
    size_t code_bytes;
    double compile_ms;
};

struct vox_kernel;

/* Validates and compiles. opts may be NULL. The context must outlive the kernel. */
enum vox_status vox_nest_compile(struct vox_ctx *ctx, const struct vox_nest *nest,
                                 const struct vox_kernel_options *opts,
                                 struct vox_kernel **kernel_out);
/* Runs the kernel: no allocation, no failure. Pointers as for vox_nest_interpret (non-NULL;
 * extra has vox_nest_extra_count entries). Results are bitwise identical for any thread
 * count: threads own disjoint runs of an outer loop that indexes C. */
void vox_kernel_run(const struct vox_kernel *k, float *C, const float *A, const float *B,
                    const float *const *extra);
const struct vox_kernel_info *vox_kernel_info(const struct vox_kernel *k);
void vox_kernel_destroy(struct vox_kernel *k);

/* The analytic default schedule for a nest whose loops are in any order: for a matmul-like
 * nest (an output dimension with C stride 1, a broadcast output dimension, a reduction) it
 * rewrites the order to cache blocks of n and k and a register tile from the vector width and
 * register count; otherwise it leaves the nest unchanged. tile_rows/tile_vecs (0: default)
 * and kc (0: from L1) override the choice, for a tuner's sweep. */
enum vox_status vox_nest_schedule_default(struct vox_ctx *ctx, struct vox_nest *nest,
                                          int tile_rows, int tile_vecs, int64_t kc);

/* C[M x N] (=|+=) A[M x K] * B[K x N], row-major with leading dimensions, FP32. Builds the
 * nest, the default schedule, compiles and runs; uncached (compile is ~0.03 ms): callers
 * that repeat shapes use vox_matmul_cached or keep a kernel from vox_nest_compile. */
enum vox_status vox_matmul(struct vox_ctx *ctx, int64_t M, int64_t N, int64_t K, float *C,
                           int64_t ldc, const float *A, int64_t lda, const float *B,
                           int64_t ldb, bool accumulate);
/* Builds the nest of a matmul (order m n k, row-major with leading dimensions). */
void vox_nest_matmul(struct vox_nest *nest, int64_t M, int64_t N, int64_t K, int64_t ldc,
                     int64_t lda, int64_t ldb);

/* ---- kernel cache (src/loop/cache.c) ------------------------------------------------------ */
/* Compiled kernels kept by (nest, options): the first request compiles, later ones with an
 * equal nest (vox_nest_equal) return the same kernel; the least recently used is destroyed
 * when `capacity` are held. One thread uses a cache at a time; its kernels stay valid until
 * evicted or the cache is destroyed. */
struct vox_kernel_cache;
enum vox_status vox_kernel_cache_create(struct vox_ctx *ctx, int capacity,
                                        struct vox_kernel_cache **cache_out);
void vox_kernel_cache_destroy(struct vox_kernel_cache *cache);
/* opts may be NULL (defaults). The kernel belongs to the cache. */
enum vox_status vox_kernel_cache_get(struct vox_kernel_cache *cache, const struct vox_nest *nest,
                                     const struct vox_kernel_options *opts,
                                     const struct vox_kernel **kernel_out);
void vox_kernel_cache_stats(const struct vox_kernel_cache *cache, int64_t *hits_out,
                            int64_t *misses_out, int *size_out);
/* vox_matmul through a cache: one compile per distinct shape and layout. */
enum vox_status vox_matmul_cached(struct vox_kernel_cache *cache, int64_t M, int64_t N,
                                  int64_t K, float *C, int64_t ldc, const float *A, int64_t lda,
                                  const float *B, int64_t ldb, bool accumulate);

/* ---- direct 3D convolution (src/loop/conv.c) ------------------------------------------- */
/* Batch 1, stride 1, valid padding: out[k, z, y, x] = bias[k] + sum over c, kz, ky, kx of
 * in[c, z+kz, y+ky, x+kx] * w[k, c, kz, ky, kx], then relu if asked.
 * Layouts of `in` and `out`:
 *   VOX_CONV_NCDHW:   (C, D, H, W) dense.
 *   VOX_CONV_BLOCKED: (ceil(C/b), D, H, W, b) with b = block channels per block, channel c at
 *     block c / b, lane c % b. The padding lanes of the last input block must hold finite
 *     values (zero them); those of the output get 0 (relu) or 0 + 0.
 * Weights are always given as (K, C, KD, KH, KW) and repacked (zero-padded) for the nest. */

enum vox_conv_layout { VOX_CONV_NCDHW = 0, VOX_CONV_BLOCKED = 1 };

struct vox_conv3d_desc {
    int64_t c, k;            /* input and output channels */
    int64_t d, h, w;         /* input extent */
    int64_t kd, kh, kw;      /* kernel extent (<= the input's) */
    enum vox_conv_layout layout;
    int64_t block;           /* channels per block for VOX_CONV_BLOCKED; 0: AVX2 8, AVX-512
                              * the block of fewest FMAs (8, 16, 24, 32 or 48; see conv.c) */
    bool bias, relu;         /* a per-output-channel bias post-op, then relu */
};

/* Checks the description (positive sizes, kernel within the input, block 1..64) and returns
 * the block in use (1 for NCDHW) and the element counts of the input, output and packed
 * weights in that layout. Any out pointer may be NULL. */
enum vox_status vox_conv3d_sizes(struct vox_ctx *ctx, const struct vox_conv3d_desc *desc,
                                 int64_t *block_out, int64_t *in_elems_out,
                                 int64_t *out_elems_out, int64_t *weight_elems_out);
/* Builds the nest (A = input, B = packed weights, C = output, extra[0] = packed bias) with
 * the default convolution schedule: blocked: vectors along the output-channel lanes, a register
 * tile of several x positions x output-channel blocks; NCDHW: vectors along x, a tile of x
 * vectors x output channels; the reduction over input channels and taps inside the tile. */
enum vox_status vox_nest_conv3d(struct vox_ctx *ctx, const struct vox_conv3d_desc *desc,
                                struct vox_nest *nest_out);
/* Repacks weights (K, C, KD, KH, KW) into the nest's B layout (weight_elems floats), and the
 * bias (K floats, may be NULL: zeros) into the nest's bias operand (out_blocks * block floats,
 * bias_out may be NULL). */
enum vox_status vox_conv3d_pack(struct vox_ctx *ctx, const struct vox_conv3d_desc *desc,
                                const float *w, const float *bias, float *w_out,
                                float *bias_out);
/* One call: packs, compiles, runs (uncached; keep a kernel from vox_nest_conv3d when repeating
 * a shape). bias is read only when desc->bias. */
enum vox_status vox_conv3d(struct vox_ctx *ctx, const struct vox_conv3d_desc *desc, float *out,
                           const float *in, const float *w, const float *bias);

#ifdef __cplusplus
}
#endif
#endif
