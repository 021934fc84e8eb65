/* A probe, not part of nerfexport: how fast can this CPU run a 128-wide int8 NeRF network when
 * the whole network is one kernel (the encoding, every layer, the skip, the heads) working on a
 * block of rows that stays in L1 between layers? It computes what the bundle's QDQ graph computes
 * (uint8 activations, int8 per-channel weights, the same scales and zero points), so its output
 * can be compared with onnxruntime's. AVX-512 VNNI only (vpdpbusd).
 *
 *   gcc -O3 -march=native -ffast-math -shared -fPIC fused_mlp.c -o fused_mlp.so -lmvec -lm
 *
 * Driven by fused_mlp.py, which reads the bundle's fine.onnx and packs the weights.
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    int Kp, N;              /* padded input width (multiple of 4), output width (multiple of 16) */
    const int8_t *W;        /* packed [Kp/4][N][4] */
    const int32_t *corr;    /* [N] int32 bias - input zero point * column sum of W */
    const float *mult;      /* [N] s_in * s_w / s_out */
    int zout;               /* output zero point */
    float r2; int z2;       /* second requantization (r2 > 0): q2 = round(q * r2) + z2 (q's zero point is 0) */
} Layer;

typedef struct {
    const float *F;  int nf;      /* encoding frequencies (3, nf): scaled = p @ F */
    const float *Fv; int nfv;     /* view encoding (3, nfv) */
    float s_enc; int z_enc;       /* encoding quantization */
    float s_venc; int z_venc;
    float r_enc_skip; int z_skip; /* encoding requantized into the skip concat: round((q - z_enc) r) + z_skip */
    float r_venc_cat; int z_cat;  /* view encoding requantized into the views concat */
    int n_trunk, skip;            /* trunk layers; the layer after which the encoding is concatenated */
    const Layer *L;               /* n_trunk trunk layers, then feature, then views.0 */
    const float *w_alpha; float b_alpha; float s_h;   /* density head on the last trunk output (scale s_h, zp 0) */
    const float *w_rgb; const float *b_rgb; float s_v; int nv;  /* rgb head (3, nv) on views.0 (scale s_v, zp 0) */
} Net;

#define R 64   /* rows per block */

static inline __m512i q_u8(__m512i acc, const int32_t *corr, const float *mult, int z)
{
    __m512 f = _mm512_cvtepi32_ps(_mm512_add_epi32(acc, _mm512_loadu_si512(corr)));
    __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(f, _mm512_loadu_ps(mult))), _mm512_set1_epi32(z));
    return _mm512_max_epi32(q, _mm512_setzero_si512());
}

static inline void store_q(uint8_t *out, __m512i q, const Layer *L)
{
    if (L->r2 > 0.f) {
        __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_min_epi32(q, _mm512_set1_epi32(255))), _mm512_set1_ps(L->r2));
        q = _mm512_max_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(f), _mm512_set1_epi32(L->z2)), _mm512_setzero_si512());
    }
    _mm_storeu_si128((__m128i *)out, _mm512_cvtusepi32_epi8(q));
}

/* out[r][n] for r < R rows: A (R, lda) uint8 times the layer's packed weights. */
static void gemm(const uint8_t *A, int lda, const Layer *L, uint8_t *out, int ldo)
{
    const int K4 = L->Kp / 4, N = L->N;
    for (int m = 0; m < R; m += 4) {
        const uint8_t *a0 = A + (m + 0) * lda, *a1 = A + (m + 1) * lda, *a2 = A + (m + 2) * lda, *a3 = A + (m + 3) * lda;
        for (int n0 = 0; n0 < N; n0 += 64) {
            const int nj = (N - n0) >= 64 ? 4 : (N - n0) / 16;
            __m512i c00 = _mm512_setzero_si512(), c01 = c00, c02 = c00, c03 = c00;
            __m512i c10 = c00, c11 = c00, c12 = c00, c13 = c00;
            __m512i c20 = c00, c21 = c00, c22 = c00, c23 = c00;
            __m512i c30 = c00, c31 = c00, c32 = c00, c33 = c00;
            const int8_t *w = L->W + (size_t)n0 * 4;
            if (nj == 4) {
                for (int k = 0; k < K4; k++, w += N * 4) {
                    __m512i b0 = _mm512_loadu_si512(w), b1 = _mm512_loadu_si512(w + 64);
                    __m512i b2 = _mm512_loadu_si512(w + 128), b3 = _mm512_loadu_si512(w + 192);
                    /* keep the weights in registers: folded into each vpdpbusd as a memory operand
                       they make 20 loads per 16 multiply-adds, more than the load ports take */
                    __asm__("" : "+v"(b0), "+v"(b1), "+v"(b2), "+v"(b3));
                    __m512i x;
                    x = _mm512_set1_epi32(*(const int32_t *)(a0 + 4 * k));
                    c00 = _mm512_dpbusd_epi32(c00, x, b0); c01 = _mm512_dpbusd_epi32(c01, x, b1);
                    c02 = _mm512_dpbusd_epi32(c02, x, b2); c03 = _mm512_dpbusd_epi32(c03, x, b3);
                    x = _mm512_set1_epi32(*(const int32_t *)(a1 + 4 * k));
                    c10 = _mm512_dpbusd_epi32(c10, x, b0); c11 = _mm512_dpbusd_epi32(c11, x, b1);
                    c12 = _mm512_dpbusd_epi32(c12, x, b2); c13 = _mm512_dpbusd_epi32(c13, x, b3);
                    x = _mm512_set1_epi32(*(const int32_t *)(a2 + 4 * k));
                    c20 = _mm512_dpbusd_epi32(c20, x, b0); c21 = _mm512_dpbusd_epi32(c21, x, b1);
                    c22 = _mm512_dpbusd_epi32(c22, x, b2); c23 = _mm512_dpbusd_epi32(c23, x, b3);
                    x = _mm512_set1_epi32(*(const int32_t *)(a3 + 4 * k));
                    c30 = _mm512_dpbusd_epi32(c30, x, b0); c31 = _mm512_dpbusd_epi32(c31, x, b1);
                    c32 = _mm512_dpbusd_epi32(c32, x, b2); c33 = _mm512_dpbusd_epi32(c33, x, b3);
                }
            } else { /* 16-48 columns left (views.0 of a narrower network): one vector at a time */
                for (int k = 0; k < K4; k++, w += N * 4) {
                    __m512i b0 = _mm512_loadu_si512(w);
                    __m512i b1 = nj > 1 ? _mm512_loadu_si512(w + 64) : b0;
                    __m512i b2 = nj > 2 ? _mm512_loadu_si512(w + 128) : b0;
                    __m512i x;
                    x = _mm512_set1_epi32(*(const int32_t *)(a0 + 4 * k));
                    c00 = _mm512_dpbusd_epi32(c00, x, b0); c01 = _mm512_dpbusd_epi32(c01, x, b1); c02 = _mm512_dpbusd_epi32(c02, x, b2);
                    x = _mm512_set1_epi32(*(const int32_t *)(a1 + 4 * k));
                    c10 = _mm512_dpbusd_epi32(c10, x, b0); c11 = _mm512_dpbusd_epi32(c11, x, b1); c12 = _mm512_dpbusd_epi32(c12, x, b2);
                    x = _mm512_set1_epi32(*(const int32_t *)(a2 + 4 * k));
                    c20 = _mm512_dpbusd_epi32(c20, x, b0); c21 = _mm512_dpbusd_epi32(c21, x, b1); c22 = _mm512_dpbusd_epi32(c22, x, b2);
                    x = _mm512_set1_epi32(*(const int32_t *)(a3 + 4 * k));
                    c30 = _mm512_dpbusd_epi32(c30, x, b0); c31 = _mm512_dpbusd_epi32(c31, x, b1); c32 = _mm512_dpbusd_epi32(c32, x, b2);
                }
            }
            __m512i c[4][4] = {{c00, c01, c02, c03}, {c10, c11, c12, c13}, {c20, c21, c22, c23}, {c30, c31, c32, c33}};
            for (int r = 0; r < 4; r++)
                for (int j = 0; j < nj; j++) {
                    const int n = n0 + 16 * j;
                    store_q(out + (m + r) * ldo + n, q_u8(c[r][j], L->corr + n, L->mult + n, L->zout), L);
                }
        }
    }
}

static inline uint8_t quant(float x, float s, int z)
{
    int q = (int)nearbyintf(x / s) + z;
    return (uint8_t)(q < 0 ? 0 : q > 255 ? 255 : q);
}

/* points, dirs (n, 3) float -> density (n), rgb (n, 3) */
void fused_mlp(const Net *net, const float *points, const float *dirs, int n, float *density, float *rgb)
{
    const int ne = 3 + 2 * net->nf, nve = 3 + 2 * net->nfv;
    const int enc_p = (ne + 3) & ~3;
    const Layer *Lf = net->L + net->n_trunk, *Lv = Lf + 1;
    uint8_t E[R * 64] __attribute__((aligned(64)));
    uint8_t H0[R * 256] __attribute__((aligned(64))), H1[R * 256] __attribute__((aligned(64)));
    uint8_t S[R * 256] __attribute__((aligned(64)));
    uint8_t V[R * 256] __attribute__((aligned(64)));
    uint8_t O[R * 128] __attribute__((aligned(64)));
    float sc[R * 32], sn[R * 32], cs[R * 32];
    float pb[R * 3], db[R * 3];
    float ef[R * 64] __attribute__((aligned(64)));
    uint8_t es[R * 64] __attribute__((aligned(64)));
    memset(E, 0, sizeof E); memset(S, 0, sizeof S); memset(V, 0, sizeof V); memset(ef, 0, sizeof ef);
    const int Nh = net->L[0].N;            /* trunk width */
    const int ldS = (ne + Nh + 3) & ~3, ldV = (Lf->N + nve + 3) & ~3;
    for (int b0 = 0; b0 < n; b0 += R) {
        const int rows = n - b0 < R ? n - b0 : R;
        memcpy(pb, points + 3 * b0, rows * 3 * sizeof(float));
        memcpy(db, dirs + 3 * b0, rows * 3 * sizeof(float));
        for (int r = rows; r < R; r++) { pb[3*r] = pb[3*r+1] = pb[3*r+2] = 0.f; db[3*r] = 1.f; db[3*r+1] = db[3*r+2] = 0.f; }
        /* position encoding: [p, sin(p F), cos(p F)] quantized; and its copy in the skip input.
           Separate sinf and cosf loops vectorise through libmvec (one loop would become sincosf) */
        for (int r = 0; r < R; r++)
            for (int j = 0; j < net->nf; j++)
                sc[r * net->nf + j] = pb[3*r] * net->F[j] + pb[3*r+1] * net->F[net->nf + j] + pb[3*r+2] * net->F[2 * net->nf + j];
        for (int i = 0; i < R * net->nf; i++) sn[i] = sinf(sc[i]);
        for (int i = 0; i < R * net->nf; i++) cs[i] = cosf(sc[i]);
        for (int r = 0; r < R; r++) {
            float *e = ef + r * enc_p;
            for (int j = 0; j < 3; j++) e[j] = pb[3*r+j];
            for (int j = 0; j < net->nf; j++) { e[3 + j] = sn[r * net->nf + j]; e[3 + net->nf + j] = cs[r * net->nf + j]; }
        }
        {
            const float s = net->s_enc, rs = net->r_enc_skip; const int z = net->z_enc, zs = net->z_skip;
            for (int i = 0; i < R * enc_p; i++) {
                float q = nearbyintf(ef[i] / s) + (float)z;
                q = q < 0.f ? 0.f : q > 255.f ? 255.f : q;
                E[i] = (uint8_t)(int)q;
                float q2 = nearbyintf((q - (float)z) * rs) + (float)zs;
                es[i] = (uint8_t)(int)(q2 < 0.f ? 0.f : q2 > 255.f ? 255.f : q2);
            }
            for (int r = 0; r < R; r++) memcpy(S + r * ldS, es + r * enc_p, ne);
        }
        /* trunk */
        const uint8_t *in = E; int ld = enc_p;
        for (int l = 0; l < net->n_trunk; l++) {
            uint8_t *out; int ldo;
            if (l == net->skip) { out = S + ne; ldo = ldS; }
            else { out = (l & 1) ? H1 : H0; ldo = 256; }
            gemm(in, ld, &net->L[l], out, ldo);
            if (l == net->skip) { in = S; ld = ldS; } else { in = out; ld = ldo; }
        }
        /* density head (float) on the last trunk output */
        for (int r = 0; r < rows; r++) {
            const uint8_t *h = in + r * ld;
            float acc = 0.f;
            for (int k = 0; k < Nh; k++) acc += (float)h[k] * net->w_alpha[k];
            float d = acc * net->s_h + net->b_alpha;
            density[b0 + r] = d > 0.f ? d : 0.f;
        }
        if (!rgb) continue;
        /* feature layer into the views concat, then the view encoding after it */
        gemm(in, ld, Lf, V, ldV);
        for (int r = 0; r < R; r++)
            for (int j = 0; j < net->nfv; j++)
                sc[r * net->nfv + j] = db[3*r] * net->Fv[j] + db[3*r+1] * net->Fv[net->nfv + j] + db[3*r+2] * net->Fv[2 * net->nfv + j];
        for (int i = 0; i < R * net->nfv; i++) sn[i] = sinf(sc[i]);
        for (int i = 0; i < R * net->nfv; i++) cs[i] = cosf(sc[i]);
        for (int r = 0; r < R; r++) {
            uint8_t *v = V + r * ldV + Lf->N;
            float ev[64];
            for (int j = 0; j < 3; j++) ev[j] = db[3*r+j];
            for (int j = 0; j < net->nfv; j++) { ev[3 + j] = sn[r * net->nfv + j]; ev[3 + net->nfv + j] = cs[r * net->nfv + j]; }
            for (int j = 0; j < nve; j++) {
                int qv = quant(ev[j], net->s_venc, net->z_venc);
                int q = (int)nearbyintf((float)(qv - net->z_venc) * net->r_venc_cat) + net->z_cat;
                v[j] = (uint8_t)(q < 0 ? 0 : q > 255 ? 255 : q);
            }
        }
        gemm(V, ldV, Lv, O, 128);
        for (int r = 0; r < rows; r++) {
            const uint8_t *h = O + r * 128;
            for (int c = 0; c < 3; c++) {
                float acc = 0.f;
                for (int k = 0; k < net->nv; k++) acc += (float)h[k] * net->w_rgb[c * net->nv + k];
                float x = acc * net->s_v + net->b_rgb[c];
                rgb[3 * (b0 + r) + c] = 1.f / (1.f + expf(-x));
            }
        }
    }
}
