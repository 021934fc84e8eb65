/* nerfexport's fused int8 NeRF network: an onnxruntime custom-op library for the CPU provider.
 *
 * onnxruntime runs an int8 bundle network as ten QGemm kernels with the encoding's Sin/Cos,
 * concats, quantize/dequantize and float heads in between; at a width of 128 a single QGemm
 * reaches about 55% of an AVX-512 VNNI CPU's int8 peak and the whole graph 30-40%. This kernel
 * computes the same network (the bundle's own QDQ graph: uint8 activations, int8 weights, the
 * same scales, zero points and roundings) in one pass per block of 64 rows whose activations
 * stay in L1 between layers. nerfexport/fused.py turns a bundle graph into one node of this op
 * with the weights packed into a uint8 tensor (the layout below); nerfexport/runtime.py
 * registers this library with the session.
 *
 * Ops (domain "nerfexport"):
 *   NerfMLP(points (N,3) f32, viewdirs (N,3) f32, params (P) u8) -> rgb (N,3) f32, density (N,1) f32
 *   NerfDensity(points (N,3) f32, params (P) u8) -> density (N,1) f32   (a coarse network read
 *       for its density alone)
 *
 * The kernels need AVX-512 F/BW/VL and VNNI; the whole file is built for them, so Python checks
 * the CPU before loading the library (fused.py). The onnxruntime C API is reached through its
 * stable ABI: OrtApiBase.GetApi(version) returns a table of function pointers whose order never
 * changes between releases; the few entries used here are declared below by their index.
 */
#include <immintrin.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>


/* ---------------------------------------------------------------- the network ----------- */

typedef struct {
    int Kp, N;              /* padded input width (multiple of 4), output width (multiple of 16) */
    const int8_t *W;        /* packed [Kp/4][N][4] */
    const int32_t *corr;    /* [N] int32 bias - input zero point * column sum of W */
    const float *mult;      /* [N] s_in * s_w / s_out */
    int zout;               /* output zero point */
    float r2; int z2;       /* r2 > 0: then requantized into a concat's scale, q2 = round((q - zout) r2) + z2 */
} Layer;

typedef struct {
    const float *F;  int nf;      /* position encoding frequencies (3, nf): scaled = p @ F */
    const float *Fv; int nfv;     /* view encoding (3, nfv) */
    float s_enc; int z_enc;       /* encodings' quantization */
    float s_venc; int z_venc;
    float r_enc_skip; int z_skip; /* encoding requantized into the skip concat: round((q - z_enc) r) + z_skip */
    float r_venc_cat; int z_cat;  /* view encoding requantized into the views concat */
    int n_trunk, skip;            /* trunk layers; the layer whose output is concatenated with the encoding (-1: none) */
    int n_layers;                 /* n_trunk + 2 with the colour layers, n_trunk for the density alone */
    Layer L[32];                  /* n_trunk trunk layers, then feature and views.0 (zeroed when absent) */
    const float *w_alpha; float b_alpha; float s_h;            /* density head on the last trunk output (zp 0) */
    const float *w_rgb; const float *b_rgb; float s_v; int nv; /* rgb head (3, nv) on views.0 (zp 0) */
} Net;

#define R 64   /* rows per block */

/* 4 activations as one int32 (a plain load; memcpy keeps it within C's aliasing rules) */
static inline int32_t load4(const uint8_t *p) { int32_t v; memcpy(&v, p, 4); return v; }

static inline __m512i q_u8(__m512i acc, const int32_t *corr, const float *mult, int z)
{
    __m512 f = _mm512_cvtepi32_ps(_mm512_add_epi32(acc, _mm512_loadu_si512(corr)));
    __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(f, _mm512_loadu_ps(mult))), _mm512_set1_epi32(z));
    return _mm512_max_epi32(q, _mm512_setzero_si512());
}

static inline void store_q(uint8_t *out, __m512i q, const Layer *L)
{
    if (L->r2 > 0.f) {   /* into a concat's quantization, as onnxruntime's int8 Concat does */
        const __m512i q8 = _mm512_sub_epi32(_mm512_min_epi32(q, _mm512_set1_epi32(255)), _mm512_set1_epi32(L->zout));
        __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(q8), _mm512_set1_ps(L->r2));
        q = _mm512_max_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(f), _mm512_set1_epi32(L->z2)), _mm512_setzero_si512());
    }
    _mm_storeu_si128((__m128i *)out, _mm512_cvtusepi32_epi8(q));
}

/* out[r][n], r < M (a multiple of 4): A (M rows, stride lda) uint8 times the layer's packed int8
   weights, requantized */
static void gemm(const uint8_t *A, int lda, const Layer *L, uint8_t *out, int ldo, int M)
{
    const int K4 = L->Kp / 4, N = L->N, N64 = N / 64 * 64;
    for (int m = 0; m < M; m += 4) {
        const uint8_t *a0 = A + (m + 0) * lda, *a1 = A + (m + 1) * lda, *a2 = A + (m + 2) * lda, *a3 = A + (m + 3) * lda;
        for (int n0 = N64; n0 < N; n0 += 16) {   /* columns past the last 64: 16 at a time */
            __m512i c0 = _mm512_setzero_si512(), c1 = c0, c2 = c0, c3 = c0;
            const int8_t *w = L->W + (size_t)n0 * 4;
            for (int k = 0; k < K4; k++, w += N * 4) {
                const __m512i b = _mm512_loadu_si512(w);
                c0 = _mm512_dpbusd_epi32(c0, _mm512_set1_epi32(load4(a0 + 4 * k)), b);
                c1 = _mm512_dpbusd_epi32(c1, _mm512_set1_epi32(load4(a1 + 4 * k)), b);
                c2 = _mm512_dpbusd_epi32(c2, _mm512_set1_epi32(load4(a2 + 4 * k)), b);
                c3 = _mm512_dpbusd_epi32(c3, _mm512_set1_epi32(load4(a3 + 4 * k)), b);
            }
            const __m512i c[4] = {c0, c1, c2, c3};
            for (int r = 0; r < 4; r++)
                store_q(out + (m + r) * ldo + n0, q_u8(c[r], L->corr + n0, L->mult + n0, L->zout), L);
        }
        for (int n0 = 0; n0 < N64; n0 += 64) {
            __m512i c00 = _mm512_setzero_si512(), c01 = c00, c02 = c00, c03 = c00;
            __m512i c10 = c00, c11 = c00, c12 = c00, c13 = c00;
            __m512i c20 = c00, c21 = c00, c22 = c00, c23 = c00;
            __m512i c30 = c00, c31 = c00, c32 = c00, c33 = c00;
            const int8_t *w = L->W + (size_t)n0 * 4;
            for (int k = 0; k < K4; k++, w += N * 4) {
                __m512i b0 = _mm512_loadu_si512(w), b1 = _mm512_loadu_si512(w + 64);
                __m512i b2 = _mm512_loadu_si512(w + 128), b3 = _mm512_loadu_si512(w + 192);
                /* keep the weights in registers: folded into each vpdpbusd as a memory operand they
                   make 20 loads per 16 multiply-adds, more than the load ports take (measured) */
                __asm__("" : "+v"(b0), "+v"(b1), "+v"(b2), "+v"(b3));
                __m512i x;
                x = _mm512_set1_epi32(load4(a0 + 4 * k));
                c00 = _mm512_dpbusd_epi32(c00, x, b0); c01 = _mm512_dpbusd_epi32(c01, x, b1);
                c02 = _mm512_dpbusd_epi32(c02, x, b2); c03 = _mm512_dpbusd_epi32(c03, x, b3);
                x = _mm512_set1_epi32(load4(a1 + 4 * k));
                c10 = _mm512_dpbusd_epi32(c10, x, b0); c11 = _mm512_dpbusd_epi32(c11, x, b1);
                c12 = _mm512_dpbusd_epi32(c12, x, b2); c13 = _mm512_dpbusd_epi32(c13, x, b3);
                x = _mm512_set1_epi32(load4(a2 + 4 * k));
                c20 = _mm512_dpbusd_epi32(c20, x, b0); c21 = _mm512_dpbusd_epi32(c21, x, b1);
                c22 = _mm512_dpbusd_epi32(c22, x, b2); c23 = _mm512_dpbusd_epi32(c23, x, b3);
                x = _mm512_set1_epi32(load4(a3 + 4 * k));
                c30 = _mm512_dpbusd_epi32(c30, x, b0); c31 = _mm512_dpbusd_epi32(c31, x, b1);
                c32 = _mm512_dpbusd_epi32(c32, x, b2); c33 = _mm512_dpbusd_epi32(c33, x, b3);
            }
            __m512i c[4][4] = {{c00, c01, c02, c03}, {c10, c11, c12, c13}, {c20, c21, c22, c23}, {c30, c31, c32, c33}};
            for (int r = 0; r < 4; r++)
                for (int j = 0; j < 4; j++) {
                    const int n = n0 + 16 * j;
                    store_q(out + (m + r) * ldo + n, q_u8(c[r][j], L->corr + n, L->mult + n, L->zout), L);
                }
        }
    }
}

/* glibc's libmvec: 16 sines / cosines at once (the x86_64 vector function ABI) */
__m512 _ZGVeN16v_sinf(__m512 x);
__m512 _ZGVeN16v_cosf(__m512 x);

/* the encoding of M rows x (M, 3): [x, sin(x F), cos(x F)] into ef (R, ld) float (nf <= 32) */
static void encode(const float *x, const float *F, int nf, float *ef, int ld, int M)
{
    const __mmask16 m0 = nf >= 16 ? 0xffff : (__mmask16)((1u << nf) - 1);
    const __mmask16 m1 = nf > 16 ? (__mmask16)((1u << (nf - 16)) - 1) : 0;
    const __m512 f00 = _mm512_maskz_loadu_ps(m0, F), f01 = _mm512_maskz_loadu_ps(m1, F + 16);
    const __m512 f10 = _mm512_maskz_loadu_ps(m0, F + nf), f11 = _mm512_maskz_loadu_ps(m1, F + nf + 16);
    const __m512 f20 = _mm512_maskz_loadu_ps(m0, F + 2 * nf), f21 = _mm512_maskz_loadu_ps(m1, F + 2 * nf + 16);
    for (int r = 0; r < M; r++) {
        const __m512 x0 = _mm512_set1_ps(x[3 * r]), x1 = _mm512_set1_ps(x[3 * r + 1]), x2 = _mm512_set1_ps(x[3 * r + 2]);
        /* the products in the graph's order: ((x0 F0 + x1 F1) + x2 F2), without fused multiply-adds */
        const __m512 v0 = _mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(x0, f00), _mm512_mul_ps(x1, f10)), _mm512_mul_ps(x2, f20));
        const __m512 v1 = _mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(x0, f01), _mm512_mul_ps(x1, f11)), _mm512_mul_ps(x2, f21));
        float *e = ef + r * ld;
        e[0] = x[3 * r]; e[1] = x[3 * r + 1]; e[2] = x[3 * r + 2];
        _mm512_mask_storeu_ps(e + 3, m0, _ZGVeN16v_sinf(v0));
        if (m1) _mm512_mask_storeu_ps(e + 19, m1, _ZGVeN16v_sinf(v1));
        _mm512_mask_storeu_ps(e + 3 + nf, m0, _ZGVeN16v_cosf(v0));
        if (m1) _mm512_mask_storeu_ps(e + 19 + nf, m1, _ZGVeN16v_cosf(v1));
    }
}

/* n floats x quantized like QuantizeLinear (round half to even, saturate to uint8) into q1 and,
   when q2, that value requantized: round((q1 - z) r) + z2, as onnxruntime's int8 Concat does */
static void quantize(const float *x, int n, float s, int z, uint8_t *q1, float r, int z2, uint8_t *q2)
{
    const __m512 vs = _mm512_set1_ps(s), vz = _mm512_set1_ps((float)z), vr = _mm512_set1_ps(r);
    const __m512 vz2 = _mm512_set1_ps((float)z2), lo = _mm512_setzero_ps(), hi = _mm512_set1_ps(255.f);
    for (int i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? 0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512 q = _mm512_roundscale_ps(_mm512_div_ps(_mm512_maskz_loadu_ps(m, x + i), vs), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        q = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(q, vz), lo), hi);
        _mm_mask_storeu_epi8(q1 + i, m, _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(q)));
        if (q2) {
            __m512 t = _mm512_roundscale_ps(_mm512_mul_ps(_mm512_sub_ps(q, vz), vr), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            t = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(t, vz2), lo), hi);
            _mm_mask_storeu_epi8(q2 + i, m, _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(t)));
        }
    }
}

/* sum_k h[k] w[k] for n uint8 h (n a multiple of 16) */
static inline float dot_u8(const uint8_t *h, const float *w, int n)
{
    __m512 acc = _mm512_setzero_ps();
    for (int k = 0; k < n; k += 16)
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(h + k)))),
                              _mm512_loadu_ps(w + k), acc);
    return _mm512_reduce_add_ps(acc);
}

static int round4(int x) { return (x + 3) & ~3; }

/* points, dirs (n, 3) -> density (n), rgb (n, 3) (rgb NULL: the density alone). 0 on success. */
static int nerf_mlp(const Net *net, const float *points, const float *dirs, int64_t n, float *density, float *rgb)
{
    const int ne = 3 + 2 * net->nf, nve = 3 + 2 * net->nfv;
    const int enc_p = round4(ne), venc_p = round4(nve);
    const Layer *Lf = net->L + net->n_trunk, *Lv = Lf + 1;
    int wmax = 0;
    for (int l = 0; l < net->n_layers; l++) wmax = net->L[l].N > wmax ? net->L[l].N : wmax;
    const int Nh = net->L[net->n_trunk - 1].N;
    const int ldS = net->skip >= 0 ? round4(ne + net->L[net->skip].N) : 4;
    const int ldV = round4(Lf->N + nve), ldH = wmax;
    /* one allocation for the block's buffers (64-byte aligned pieces) */
    const size_t sz[8] = {(size_t)R * enc_p, (size_t)R * ldH, (size_t)R * ldH, (size_t)R * ldS, (size_t)R * ldV,
                          (size_t)R * ldH, (size_t)R * enc_p * 4, (size_t)R * venc_p * 4};
    size_t total = 0, off[9];
    for (int i = 0; i < 8; i++) { off[i] = total; total += (sz[i] + 63) & ~(size_t)63; }
    off[8] = total; total += (size_t)R * enc_p;
    uint8_t *mem = aligned_alloc(64, total);
    if (!mem) return 1;
    memset(mem, 0, total);
    uint8_t *E = mem + off[0], *H0 = mem + off[1], *H1 = mem + off[2], *S = mem + off[3], *V = mem + off[4];
    uint8_t *O = mem + off[5], *es = mem + off[8];
    float *ef = (float *)(mem + off[6]), *evf = (float *)(mem + off[7]);
    float pb[R * 3], db[R * 3];

    for (int64_t b0 = 0; b0 < n; b0 += R) {
        const int rows = n - b0 < R ? (int)(n - b0) : R, M = round4(rows);   /* rows computed: a multiple of 4 */
        memcpy(pb, points + 3 * b0, (size_t)rows * 3 * sizeof(float));
        if (rgb) memcpy(db, dirs + 3 * b0, (size_t)rows * 3 * sizeof(float));
        for (int r = rows; r < M; r++) { pb[3*r] = pb[3*r+1] = pb[3*r+2] = 0.f; db[3*r] = 1.f; db[3*r+1] = db[3*r+2] = 0.f; }
        /* position encoding, quantized; and its copy requantized into the skip concat */
        encode(pb, net->F, net->nf, ef, enc_p, M);
        quantize(ef, M * enc_p, net->s_enc, net->z_enc, E, net->r_enc_skip, net->z_skip, es);
        if (net->skip >= 0)
            for (int r = 0; r < M; r++) memcpy(S + r * ldS, es + r * enc_p, (size_t)ne);
        /* trunk */
        const uint8_t *in = E; int ld = enc_p;
        for (int l = 0; l < net->n_trunk; l++) {
            uint8_t *out; int ldo;
            if (l == net->skip) { out = S + ne; ldo = ldS; }
            else { out = (l & 1) ? H1 : H0; ldo = ldH; }
            gemm(in, ld, &net->L[l], out, ldo, M);
            if (l == net->skip) { in = S; ld = ldS; } else { in = out; ld = ldo; }
        }
        /* density head (float) on the last trunk output */
        for (int r = 0; r < rows; r++) {
            const float d = dot_u8(in + r * ld, net->w_alpha, Nh) * net->s_h + net->b_alpha;
            density[b0 + r] = d > 0.f ? d : 0.f;
        }
        if (!rgb) continue;
        /* the feature layer into the views concat, the view encoding after it */
        gemm(in, ld, Lf, V, ldV, M);
        encode(db, net->Fv, net->nfv, evf, venc_p, M);
        for (int r = 0; r < M; r++)
            quantize(evf + r * venc_p, nve, net->s_venc, net->z_venc, es, net->r_venc_cat, net->z_cat, V + r * ldV + Lf->N);
        gemm(V, ldV, Lv, O, ldH, M);
        for (int r = 0; r < rows; r++) {
            const uint8_t *h = O + r * ldH;
            for (int c = 0; c < 3; c++)
                rgb[3 * (b0 + r) + c] = 1.f / (1.f + expf(-(dot_u8(h, net->w_rgb + c * net->nv, net->nv) * net->s_v
                                                           + net->b_rgb[c])));
        }
    }
    free(mem);
    return 0;
}

/* ------------------------------------------------- the parameter tensor (fused.py writes it) --- */

#define MAGIC 0x3146584e   /* "NXF1" */
enum { H_MAGIC, H_NLAYERS, H_NTRUNK, H_SKIP, H_NF, H_NFV, H_NV, H_ZENC, H_ZVENC, H_ZSKIP, H_ZCAT,
       H_OFF_F, H_OFF_FV, H_OFF_WALPHA, H_OFF_WRGB, H_OFF_BRGB, H_INTS = 16 };
enum { F_SENC, F_SVENC, F_RENCSKIP, F_RVENCCAT, F_BALPHA, F_SH, F_SV, F_FLOATS = 8 };
enum { L_KP, L_N, L_OFF_W, L_OFF_CORR, L_OFF_MULT, L_ZOUT, L_Z2, L_R2, L_INTS = 8 };

/* Net from the params tensor; 0 when it is well formed (every array inside it), else 1. */
static int parse(const uint8_t *p, int64_t size, int with_colour, Net *net)
{
    const int32_t *h = (const int32_t *)p;
    const float *f = (const float *)(p + 4 * H_INTS);
    if (size < 4 * (H_INTS + F_FLOATS) || h[H_MAGIC] != MAGIC) return 1;
    const int nl = h[H_NLAYERS];
    if (nl < 1 || nl > 32 || size < 4 * (H_INTS + F_FLOATS + L_INTS * nl)) return 1;
    memset(net, 0, sizeof *net);
    net->n_trunk = h[H_NTRUNK]; net->skip = h[H_SKIP]; net->nf = h[H_NF]; net->nfv = h[H_NFV]; net->nv = h[H_NV];
    net->z_enc = h[H_ZENC]; net->z_venc = h[H_ZVENC]; net->z_skip = h[H_ZSKIP]; net->z_cat = h[H_ZCAT];
    net->s_enc = f[F_SENC]; net->s_venc = f[F_SVENC]; net->r_enc_skip = f[F_RENCSKIP]; net->r_venc_cat = f[F_RVENCCAT];
    net->b_alpha = f[F_BALPHA]; net->s_h = f[F_SH]; net->s_v = f[F_SV];
    /* the colour layers (feature, views.0) follow the trunk; a density-only tensor may leave them out */
    const int colour_layers = nl == net->n_trunk + 2;
    net->n_layers = nl;
    if (!(colour_layers || (!with_colour && nl == net->n_trunk)) || net->n_trunk < 1 || net->skip < -1
        || net->skip >= net->n_trunk - 1 || net->nf < 0 || net->nf > 32 || net->nfv < 0 || net->nfv > 32
        || (colour_layers && net->nv < 1)) return 1;
#define ARRAY(off, bytes) ((off) >= 0 && (int64_t)(off) + (int64_t)(bytes) <= size ? p + (off) : NULL)
    const int32_t *lr = (const int32_t *)(p + 4 * (H_INTS + F_FLOATS));
    const int ne = 3 + 2 * net->nf, nve = 3 + 2 * net->nfv;
    int k_expected = round4(ne);
    for (int l = 0; l < nl; l++, lr += L_INTS) {
        Layer *L = &net->L[l];
        L->Kp = lr[L_KP]; L->N = lr[L_N]; L->zout = lr[L_ZOUT]; L->z2 = lr[L_Z2];
        memcpy(&L->r2, &lr[L_R2], 4);
        if (L->N < 16 || L->N > 1024 || L->N % 16 || L->Kp < 4 || L->Kp % 4 || L->Kp != k_expected) return 1;
        L->W = (const int8_t *)ARRAY(lr[L_OFF_W], (int64_t)L->Kp * L->N);
        L->corr = (const int32_t *)ARRAY(lr[L_OFF_CORR], 4 * (int64_t)L->N);
        L->mult = (const float *)ARRAY(lr[L_OFF_MULT], 4 * (int64_t)L->N);
        if (!L->W || !L->corr || !L->mult) return 1;
        /* the next layer's input width */
        if (l == net->skip) k_expected = round4(ne + L->N);
        else if (l == net->n_trunk - 1) k_expected = L->N;       /* the feature layer reads the trunk */
        else if (l == net->n_trunk) k_expected = round4(L->N + nve);
        else k_expected = L->N;
    }
    net->F = (const float *)ARRAY(h[H_OFF_F], 12 * (int64_t)net->nf);
    net->Fv = (const float *)ARRAY(h[H_OFF_FV], 12 * (int64_t)net->nfv);
    net->w_alpha = (const float *)ARRAY(h[H_OFF_WALPHA], 4 * (int64_t)net->L[net->n_trunk - 1].N);
    net->w_rgb = (const float *)ARRAY(h[H_OFF_WRGB], 12 * (int64_t)net->nv);
    net->b_rgb = (const float *)ARRAY(h[H_OFF_BRGB], 12);
    if (!net->F || !net->w_alpha || (with_colour && (!net->Fv || !net->w_rgb || !net->b_rgb))) return 1;
    if (colour_layers && net->nv != net->L[nl - 1].N) return 1;
#undef ARRAY
    return 0;
}

/* The kernel without onnxruntime (tests call it through ctypes): 0 on success, 1 for a malformed
   params tensor, 2 when out of memory. rgb NULL: the density alone. */
__attribute__((visibility("default")))
int nerfexport_nerf_mlp(const uint8_t *params, int64_t size, const float *points, const float *dirs, int64_t n,
                        float *density, float *rgb)
{
    Net net;
    if (parse(params, size, rgb != NULL, &net) || (rgb && !dirs)) return 1;
    if (n <= 0 || !points || !density) return n == 0 ? 0 : 1;   /* n = 0: a params check alone */
    return nerf_mlp(&net, points, dirs, n, density, rgb) ? 2 : 0;
}

/* --------------------------------------------------------------- the onnxruntime custom op --- */
/* onnxruntime's C API through its stable ABI: OrtApiBase.GetApi(version) returns a table of
   function pointers that only ever grows at its end, so an entry's index is fixed. The entries
   used here, by index (all present since API version 1): */
typedef struct OrtStatus OrtStatus;
typedef struct OrtValue OrtValue;
typedef struct OrtKernelContext OrtKernelContext;
typedef struct OrtTypeShape OrtTypeShape;
typedef struct OrtDomain OrtDomain;
typedef struct OrtSessionOptions OrtSessionOptions;
typedef struct { const void *(*GetApi)(uint32_t version); const char *(*GetVersionString)(void); } OrtApiBase;

enum { API_CreateStatus = 0, API_CreateCustomOpDomain = 26, API_CustomOpDomain_Add = 27, API_AddCustomOpDomain = 28,
       API_GetTensorMutableData = 51, API_GetTensorElementType = 60, API_GetDimensionsCount = 61,
       API_GetDimensions = 62, API_GetTensorTypeAndShape = 65, API_KernelContext_GetInput = 90,
       API_KernelContext_GetOutput = 91, API_ReleaseStatus = 93, API_ReleaseTensorTypeAndShapeInfo = 99 };
enum { T_FLOAT = 1, T_UINT8 = 2 };   /* ONNXTensorElementDataType */
#define API_VERSION 16               /* the version this library asks for and declares its ops at (ORT 1.16+) */

static const void *const *api;       /* the function table */
#define FN(name, type) ((type)api[API_##name])

typedef OrtStatus *(*CreateStatus_t)(int, const char *);
typedef OrtStatus *(*CreateCustomOpDomain_t)(const char *, OrtDomain **);
typedef OrtStatus *(*CustomOpDomain_Add_t)(OrtDomain *, const void *);
typedef OrtStatus *(*AddCustomOpDomain_t)(OrtSessionOptions *, OrtDomain *);
typedef OrtStatus *(*GetTensorMutableData_t)(OrtValue *, void **);
typedef OrtStatus *(*GetTensorElementType_t)(const OrtTypeShape *, int *);
typedef OrtStatus *(*GetDimensionsCount_t)(const OrtTypeShape *, size_t *);
typedef OrtStatus *(*GetDimensions_t)(const OrtTypeShape *, int64_t *, size_t);
typedef OrtStatus *(*GetTensorTypeAndShape_t)(const OrtValue *, OrtTypeShape **);
typedef OrtStatus *(*KernelContext_GetInput_t)(const OrtKernelContext *, size_t, const OrtValue **);
typedef OrtStatus *(*KernelContext_GetOutput_t)(OrtKernelContext *, size_t, const int64_t *, size_t, OrtValue **);
typedef void (*ReleaseStatus_t)(OrtStatus *);
typedef void (*ReleaseTensorTypeAndShapeInfo_t)(OrtTypeShape *);

/* OrtCustomOp up to KernelComputeV2 (what API version 16 reads); zero after them */
typedef struct {
    uint32_t version;
    void *(*CreateKernel)(const void *op, const void *api, const void *info);
    const char *(*GetName)(const void *op);
    const char *(*GetExecutionProviderType)(const void *op);
    int (*GetInputType)(const void *op, size_t i);
    size_t (*GetInputTypeCount)(const void *op);
    int (*GetOutputType)(const void *op, size_t i);
    size_t (*GetOutputTypeCount)(const void *op);
    void (*KernelCompute)(void *kernel, OrtKernelContext *ctx);
    void (*KernelDestroy)(void *kernel);
    int (*GetInputCharacteristic)(const void *op, size_t i);   /* 0: required */
    int (*GetOutputCharacteristic)(const void *op, size_t i);
    int (*GetInputMemoryType)(const void *op, size_t i);       /* version 13: 0, the default (CPU) memory */
    int (*GetVariadicInputMinArity)(const void *op);           /* version 14; read for variadic inputs only */
    int (*GetVariadicInputHomogeneity)(const void *op);
    int (*GetVariadicOutputMinArity)(const void *op);
    int (*GetVariadicOutputHomogeneity)(const void *op);
    OrtStatus *(*CreateKernelV2)(const void *op, const void *api, const void *info, void **kernel);  /* 16 */
    OrtStatus *(*KernelComputeV2)(void *kernel, OrtKernelContext *ctx);                             /* 16 */
    void *later[7];                                             /* members of later API versions, unset */
} CustomOp;

/* a status-returning call whose status is dropped; 1 when it failed */
static int failed(OrtStatus *s) { if (!s) return 0; FN(ReleaseStatus, ReleaseStatus_t)(s); return 1; }

/* input i as a tensor of type `type`: 0 and its data (NULL when empty) and dimensions (at most 2) */
static int input(OrtKernelContext *ctx, size_t i, int type, int64_t dims[2], size_t *nd, const void **data)
{
    const OrtValue *v = NULL;
    OrtTypeShape *ts = NULL;
    int et = 0;
    *data = NULL;
    if (failed(FN(KernelContext_GetInput, KernelContext_GetInput_t)(ctx, i, &v)) || !v) return 1;
    if (failed(FN(GetTensorTypeAndShape, GetTensorTypeAndShape_t)(v, &ts))) return 1;
    int bad = failed(FN(GetTensorElementType, GetTensorElementType_t)(ts, &et))
              || failed(FN(GetDimensionsCount, GetDimensionsCount_t)(ts, nd)) || *nd < 1 || *nd > 2
              || failed(FN(GetDimensions, GetDimensions_t)(ts, dims, *nd)) || et != type;
    FN(ReleaseTensorTypeAndShapeInfo, ReleaseTensorTypeAndShapeInfo_t)(ts);
    if (bad || failed(FN(GetTensorMutableData, GetTensorMutableData_t)((OrtValue *)v, (void **)data))) return 1;
    return 0;
}

/* output i, (n, width) float: 0 and its data (NULL when n is 0) */
static int output(OrtKernelContext *ctx, size_t i, int64_t n, int64_t width, float **data)
{
    const int64_t dims[2] = {n, width};
    OrtValue *v = NULL;
    *data = NULL;
    if (failed(FN(KernelContext_GetOutput, KernelContext_GetOutput_t)(ctx, i, dims, 2, &v)) || !v) return 1;
    if (failed(FN(GetTensorMutableData, GetTensorMutableData_t)(v, (void **)data))) return 1;
    return n > 0 && !*data;
}

typedef struct { int colour; } Kernel;

/* NerfMLP(points, viewdirs, params) -> rgb, density; NerfDensity(points, params) -> density.
   NULL, or what is wrong with the inputs (the call's error) */
static const char *run(const Kernel *kernel, OrtKernelContext *ctx)
{
    const int colour = kernel->colour;
    int64_t dp[2] = {0, 0}, dd[2] = {0, 0}, dq[2] = {0, 0};
    size_t np_ = 0, nd = 0, nq = 0;
    const void *points = NULL, *dirs = NULL, *params = NULL;
    if (input(ctx, 0, T_FLOAT, dp, &np_, &points) || np_ != 2 || dp[1] != 3)
        return "nerfexport fused network: points must be (N, 3) float32";
    if (colour && (input(ctx, 1, T_FLOAT, dd, &nd, &dirs) || nd != 2 || dd[1] != 3 || dd[0] != dp[0]))
        return "nerfexport fused network: viewdirs must be (N, 3) float32, as many as the points";
    Net net;
    if (input(ctx, colour ? 2 : 1, T_UINT8, dq, &nq, &params) || nq != 1 || !params || parse(params, dq[0], colour, &net))
        return "nerfexport fused network: the params tensor is malformed (not written by nerfexport.fused.pack)";
    const int64_t n = dp[0];
    float *rgb = NULL, *density = NULL;
    if ((colour && output(ctx, 0, n, 3, &rgb)) || output(ctx, colour ? 1 : 0, n, 1, &density))
        return "nerfexport fused network: could not allocate the outputs";
    if (n == 0) return NULL;   /* empty in, empty out, as the graph does */
    if (!points || (colour && !dirs)) return "nerfexport fused network: an input has no data";
    if (nerf_mlp(&net, points, dirs, n, density, rgb)) return "nerfexport fused network: out of memory";
    return NULL;
}

static OrtStatus *compute_v2(void *kernel, OrtKernelContext *ctx)
{
    const char *err = run((const Kernel *)kernel, ctx);
    return err ? FN(CreateStatus, CreateStatus_t)(2 /* ORT_INVALID_ARGUMENT */, err) : NULL;
}

static Kernel k_colour = {1}, k_density = {0};
static OrtStatus *create_mlp_v2(const void *op, const void *a, const void *info, void **k)
{ (void)op; (void)a; (void)info; *k = &k_colour; return NULL; }
static OrtStatus *create_density_v2(const void *op, const void *a, const void *info, void **k)
{ (void)op; (void)a; (void)info; *k = &k_density; return NULL; }
static void destroy(void *kernel) { (void)kernel; }
static const char *name_mlp(const void *op) { (void)op; return "NerfMLP"; }
static const char *name_density(const void *op) { (void)op; return "NerfDensity"; }
static const char *provider(const void *op) { (void)op; return "CPUExecutionProvider"; }
static int in_type_mlp(const void *op, size_t i) { (void)op; return i == 2 ? T_UINT8 : T_FLOAT; }
static int in_type_density(const void *op, size_t i) { (void)op; return i == 1 ? T_UINT8 : T_FLOAT; }
static size_t three(const void *op) { (void)op; return 3; }
static size_t two(const void *op) { (void)op; return 2; }
static size_t one(const void *op) { (void)op; return 1; }
static int out_type(const void *op, size_t i) { (void)op; (void)i; return T_FLOAT; }
static int required(const void *op, size_t i) { (void)op; (void)i; return 0; }
static int default_memory(const void *op, size_t i) { (void)op; (void)i; return 0; }
static int arity(const void *op) { (void)op; return 1; }
static int homogeneous(const void *op) { (void)op; return 1; }

/* only the V2 entry points (errors come back as statuses): CreateKernel and KernelCompute stay NULL,
   which onnxruntime 1.16 needs to call the V2 ones and later versions accept */
static CustomOp op_mlp = {API_VERSION, NULL, name_mlp, provider, in_type_mlp, three, out_type, two,
                          NULL, destroy, required, required, default_memory, arity, homogeneous, arity,
                          homogeneous, create_mlp_v2, compute_v2, {0}};
static CustomOp op_density = {API_VERSION, NULL, name_density, provider, in_type_density, two, out_type,
                              one, NULL, destroy, required, required, default_memory, arity, homogeneous, arity,
                              homogeneous, create_density_v2, compute_v2, {0}};

/* what SessionOptions.register_custom_ops_library calls. The domain is made once and added to every
   session's options (onnxruntime does not take ownership of it; it lives as long as the process). */
static pthread_mutex_t domain_lock = PTHREAD_MUTEX_INITIALIZER;
static OrtDomain *domain;

__attribute__((visibility("default")))
OrtStatus *RegisterCustomOps(OrtSessionOptions *options, const OrtApiBase *base)
{
    const void *const *table = base->GetApi(API_VERSION);
    if (!table) {   /* an onnxruntime older than API version 16: say so through version 1's CreateStatus */
        const void *const *v1 = base->GetApi(1);
        return v1 ? ((CreateStatus_t)v1[API_CreateStatus])(1, "nerfexport's fused kernel needs onnxruntime 1.16 or later") : NULL;
    }
    OrtStatus *s = NULL;
    pthread_mutex_lock(&domain_lock);
    api = table;
    if (!domain) {
        OrtDomain *d = NULL;
        s = FN(CreateCustomOpDomain, CreateCustomOpDomain_t)("nerfexport", &d);
        if (!s) s = FN(CustomOpDomain_Add, CustomOpDomain_Add_t)(d, &op_mlp);
        if (!s) s = FN(CustomOpDomain_Add, CustomOpDomain_Add_t)(d, &op_density);
        if (!s) domain = d;   /* on failure the half-made domain is left (not reused): a few bytes, once */
    }
    if (!s) s = FN(AddCustomOpDomain, AddCustomOpDomain_t)(options, domain);
    pthread_mutex_unlock(&domain_lock);
    return s;
}
