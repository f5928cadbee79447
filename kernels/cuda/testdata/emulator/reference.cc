// Checks the kernels of kernels/cuda/kernels against float64 references on
// the CPU, through cuda_emu.h. TestKernelsOnEmulator in emulator_test.go
// appends this file to the kernel sources and compiles it with g++. It prints
// one line per check and exits with status 1 when any check fails.
#include <random>
#include <string>
static std::mt19937 rng(42);
static float uni(float s) { return s * (std::uniform_real_distribution<float>(-1, 1)(rng)); }
static std::vector<float> rnd(size_t n, float s) { std::vector<float> v(n); for (auto& x : v) x = uni(s); return v; }
static int failures = 0;
static void check(const char* name, const std::vector<float>& got, const std::vector<double>& want, double tol) {
  double md = 0, mr = 0; size_t at = 0;
  for (size_t i = 0; i < want.size(); i++) {
    double d = fabs(got[i] - want[i]);
    if (!(d <= md)) { md = d; at = i; }
    mr = fmax(mr, fabs(want[i]));
  }
  // The floor keeps results that are 0 up to rounding, such as RMSNorm's dx
  // for C = 1, from dividing by a rounding error.
  double rel = md / fmax(mr, 0.1);
  bool ok = rel <= tol;
  if (!ok) failures++;
  printf("%s %s: rel err %.3g (at %zu: got %g want %g)\n", ok ? "ok  " : "FAIL", name, rel, at, got.empty() ? 0.0 : got[at], want.empty() ? 0.0 : want[at]);
}

// Shared memory of the attention kernels, as kernels/cuda computes it.
static int paddedHS(int hs) { return (hs + 3) & ~3; }
static int forwardShared(int hs) { return 4 * 32 * (paddedHS(hs) + paddedHS(hs) + 4 + hs); }
static int dqShared(int hs) { return 4 * 32 * (2 * paddedHS(hs) + 2 * (paddedHS(hs) + 4)); }
static int dkdvShared(int hs) { return dqShared(hs) + 4 * 4 * 32; }

// The kernel builds of one head size, as kernels/cuda picks them: the
// smallest maximum head size of 64, 128 and 256 that covers hs.
struct attentionBuild {
  void (*forward)(float*, float*, const float*, const float*, const float*, const int*, int, int, int, int, int, int,
                  float, int*);
  void (*dq)(float*, const float*, const float*, const float*, const float*, const float*, const float*, const int*,
             int, int, int, int, float, int*);
  void (*dkdv)(float*, float*, const float*, const float*, const float*, const float*, const float*, const float*,
               const int*, int, int, int, int, float, int*);
};

static attentionBuild buildFor(int hs) {
  if (hs <= 64) return {attention_forward_hs64, attention_backward_dq_hs64, attention_backward_dkdv_hs64};
  if (hs <= 128) return {attention_forward_hs128, attention_backward_dq_hs128, attention_backward_dkdv_hs128};
  return {attention_forward_hs256, attention_backward_dq_hs256, attention_backward_dkdv_hs256};
}

static void attention_case(int B, int T, int NH, int NKV, int HS, std::vector<int> seg) {
  char name[200];
  snprintf(name, sizeof name, "attention B=%d T=%d NH=%d NKV=%d HS=%d", B, T, NH, NKV, HS);
  if (seg.empty()) seg.assign(B * T, 0);
  auto q = rnd((size_t)B * T * NH * HS, 2), k = rnd((size_t)B * T * NKV * HS, 2), v = rnd((size_t)B * T * NKV * HS, 1);
  auto dO = rnd((size_t)B * T * NH * HS, 1);
  float scale = (float)(1 / sqrt((double)HS));
  int group = NH / NKV;

  // The float64 reference, straight from the definitions.
  std::vector<double> out((size_t)B * T * NH * HS), lse((size_t)B * NH * T), dq(out.size()), dk(k.size()), dv(v.size());
  for (int b = 0; b < B; b++) for (int h = 0; h < NH; h++) for (int t = 0; t < T; t++) {
    int g = h / group;
    int lo = seg[b * T + t];
    std::vector<double> s(T, -INFINITY), p(T, 0);
    double m = -INFINITY;
    const float* qr = &q[(((size_t)b * T + t) * NH + h) * HS];
    for (int j = lo; j <= t; j++) {
      const float* kr = &k[(((size_t)b * T + j) * NKV + g) * HS];
      double d = 0; for (int x = 0; x < HS; x++) d += (double)qr[x] * kr[x];
      s[j] = d * scale; m = fmax(m, s[j]);
    }
    double l = 0; for (int j = lo; j <= t; j++) { p[j] = exp(s[j] - m); l += p[j]; }
    for (int j = lo; j <= t; j++) p[j] /= l;
    lse[((size_t)b * NH + h) * T + t] = m + log(l);
    double* o = &out[(((size_t)b * T + t) * NH + h) * HS];
    for (int j = lo; j <= t; j++) { const float* vr = &v[(((size_t)b * T + j) * NKV + g) * HS]; for (int x = 0; x < HS; x++) o[x] += p[j] * vr[x]; }
    const float* g_ = &dO[(((size_t)b * T + t) * NH + h) * HS];
    double D = 0; for (int x = 0; x < HS; x++) D += o[x] * g_[x];
    for (int j = lo; j <= t; j++) {
      const float* vr = &v[(((size_t)b * T + j) * NKV + g) * HS];
      const float* kr = &k[(((size_t)b * T + j) * NKV + g) * HS];
      double dp = 0; for (int x = 0; x < HS; x++) dp += (double)g_[x] * vr[x];
      double ds = p[j] * (dp - D);
      for (int x = 0; x < HS; x++) {
        dq[(((size_t)b * T + t) * NH + h) * HS + x] += scale * ds * kr[x];
        dk[(((size_t)b * T + j) * NKV + g) * HS + x] += scale * ds * qr[x];
        dv[(((size_t)b * T + j) * NKV + g) * HS + x] += p[j] * g_[x];
      }
    }
  }

  std::vector<float> gout(out.size(), nanf("")), glse(lse.size(), nanf("")), gdq(dq.size(), nanf("")), gdk(dk.size(), nanf("")), gdv(dv.size(), nanf("")), D(lse.size(), nanf(""));
  int err = 0;
  attentionBuild build = buildFor(HS);
  auto fwd = build.forward;
  auto kdq = build.dq;
  auto kdkdv = build.dkdv;
  unsigned tiles = (T + 31) / 32;
  emu_launch({tiles, (unsigned)NH, (unsigned)B}, {128, 1, 1}, forwardShared(HS), [&] {
    fwd(gout.data(), glse.data(), q.data(), k.data(), v.data(), seg.data(), T, T, NH, NKV, HS, 0, scale, &err);
  });
  check((std::string(name) + " out").c_str(), gout, out, 1e-5);
  check((std::string(name) + " lse").c_str(), glse, lse, 1e-5);

  // Backward from the kernel's own out and lse, as the backend does.
  int rows = B * NH * T;
  emu_launch({(unsigned)min(65535, (rows + 7) / 8), 1, 1}, {256, 1, 1}, 0, [&] {
    attention_row_dot(D.data(), gout.data(), dO.data(), B, T, NH, HS);
  });
  emu_launch({tiles, (unsigned)NH, (unsigned)B}, {128, 1, 1}, dqShared(HS), [&] {
    kdq(gdq.data(), dO.data(), q.data(), k.data(), v.data(), glse.data(), D.data(), seg.data(), T, NH, NKV, HS, scale, &err);
  });
  emu_launch({tiles, (unsigned)NKV, (unsigned)B}, {128, 1, 1}, dkdvShared(HS), [&] {
    kdkdv(gdk.data(), gdv.data(), dO.data(), q.data(), k.data(), v.data(), glse.data(), D.data(), seg.data(), T, NH, NKV, HS, scale, &err);
  });
  check((std::string(name) + " dq").c_str(), gdq, dq, 1e-5);
  check((std::string(name) + " dk").c_str(), gdk, dk, 1e-5);
  check((std::string(name) + " dv").c_str(), gdv, dv, 1e-5);
  if (err) { printf("FAIL %s: error flag %d\n", name, err); failures++; }
}

static void decode_case(int B, int Tq, int S, int length, int NH, int NKV, int HS) {
  char name[200];
  snprintf(name, sizeof name, "decode B=%d Tq=%d S=%d length=%d NH=%d NKV=%d HS=%d", B, Tq, S, length, NH, NKV, HS);
  auto q = rnd((size_t)B * Tq * NH * HS, 2), k = rnd((size_t)B * S * NKV * HS, 2), v = rnd((size_t)B * S * NKV * HS, 1);
  float scale = (float)(1 / sqrt((double)HS));
  int group = NH / NKV, first = length - Tq;
  std::vector<double> out((size_t)B * Tq * NH * HS);
  for (int b = 0; b < B; b++) for (int h = 0; h < NH; h++) for (int i = 0; i < Tq; i++) {
    int g = h / group, last = first + i;
    std::vector<double> s(last + 1); double m = -INFINITY;
    for (int j = 0; j <= last; j++) { double d = 0; for (int x = 0; x < HS; x++) d += (double)q[(((size_t)b * Tq + i) * NH + h) * HS + x] * k[(((size_t)b * S + j) * NKV + g) * HS + x]; s[j] = d * scale; m = fmax(m, s[j]); }
    double l = 0; for (auto& e : s) { e = exp(e - m); l += e; }
    for (int j = 0; j <= last; j++) for (int x = 0; x < HS; x++) out[(((size_t)b * Tq + i) * NH + h) * HS + x] += s[j] / l * v[(((size_t)b * S + j) * NKV + g) * HS + x];
  }
  std::vector<float> got(out.size(), nanf(""));
  int err = 0;
  auto fwd = buildFor(HS).forward;
  emu_launch({(unsigned)(Tq + 31) / 32, (unsigned)NH, (unsigned)B}, {128, 1, 1}, forwardShared(HS), [&] {
    fwd(got.data(), nullptr, q.data(), k.data(), v.data(), nullptr, Tq, S, NH, NKV, HS, first, scale, &err);
  });
  check(name, got, out, 1e-5);
}

static void ce_case(int R, int V, float gradScale) {
  auto logits = rnd((size_t)R * V, 8);
  std::vector<int> targets(R + 3), rows(R);
  for (int r = 0; r < R; r++) { rows[r] = r + 2; targets[r + 2] = (r * 7919) % V; }
  std::vector<double> loss(R), grad((size_t)R * V);
  for (int r = 0; r < R; r++) {
    double m = -INFINITY; for (int i = 0; i < V; i++) m = fmax(m, logits[(size_t)r * V + i]);
    double s = 0; for (int i = 0; i < V; i++) s += exp(logits[(size_t)r * V + i] - m);
    loss[r] = m + log(s) - logits[(size_t)r * V + targets[rows[r]]];
    for (int i = 0; i < V; i++) grad[(size_t)r * V + i] = gradScale * (exp(logits[(size_t)r * V + i] - m) / s - (i == targets[rows[r]]));
  }
  std::vector<double> gl(R, nan(""));
  emu_launch({(unsigned)R, 1, 1}, {(unsigned)min(1024, max(32, (min(V, 1024) + 31) / 32 * 32)), 1, 1}, 0, [&] {
    ce_softmax_rows(logits.data(), gl.data(), targets.data(), rows.data(), R, V, 1, gradScale);
  });
  std::vector<float> glf(gl.begin(), gl.end());
  char name[100];
  snprintf(name, sizeof name, "ce R=%d V=%d", R, V);
  check((std::string(name) + " loss").c_str(), glf, loss, 1e-6);
  check((std::string(name) + " grad").c_str(), logits, grad, 1e-5);
}

static void rmsnorm_case(int N, int C) {
  auto x = rnd((size_t)N * C, 3), w = rnd(C, 1), g = rnd((size_t)N * C, 1), dw0 = rnd(C, 1);
  float eps = 1e-6f;
  std::vector<double> out((size_t)N * C), rstd(N), dx((size_t)N * C), dw(dw0.begin(), dw0.end());
  for (int n = 0; n < N; n++) {
    double s = 0; for (int c = 0; c < C; c++) s += (double)x[(size_t)n * C + c] * x[(size_t)n * C + c];
    double r = 1 / sqrt(s / C + eps); rstd[n] = r;
    double dot = 0; for (int c = 0; c < C; c++) dot += (double)g[(size_t)n * C + c] * w[c] * x[(size_t)n * C + c];
    for (int c = 0; c < C; c++) {
      out[(size_t)n * C + c] = w[c] * x[(size_t)n * C + c] * r;
      dx[(size_t)n * C + c] = r * w[c] * g[(size_t)n * C + c] - r * r * r * dot / C * x[(size_t)n * C + c];
      dw[c] += g[(size_t)n * C + c] * x[(size_t)n * C + c] * r;
    }
  }
  std::vector<float> gout((size_t)N * C, nanf("")), grstd(N, nanf("")), gdw(dw0);
  unsigned threads = (unsigned)min(256, min(1024, max(32, (C + 31) / 32 * 32)));
  emu_launch({(unsigned)N, 1, 1}, {threads, 1, 1}, 0, [&] { rmsnorm_forward(gout.data(), grstd.data(), x.data(), w.data(), N, C, eps); });
  char name[100];
  snprintf(name, sizeof name, "rmsnorm N=%d C=%d", N, C);
  check((std::string(name) + " out").c_str(), gout, out, 1e-6);
  check((std::string(name) + " rstd").c_str(), grstd, rstd, 1e-6);
  int slices = (N + 255) / 256;
  std::vector<double> partials((size_t)slices * C, nan(""));
  emu_launch({(unsigned)(C + 31) / 32, (unsigned)slices, 1}, {32, 8, 1}, 0, [&] { rmsnorm_dweight_partial(partials.data(), g.data(), x.data(), grstd.data(), N, C, 256); });
  emu_launch({(unsigned)(C + 255) / 256, 1, 1}, {256, 1, 1}, 0, [&] { rmsnorm_dweight_finish(gdw.data(), partials.data(), slices, C); });
  // dx in place of dOut.
  std::vector<float> gg(g);
  emu_launch({(unsigned)N, 1, 1}, {threads, 1, 1}, 0, [&] { rmsnorm_backward_dx(gg.data(), gg.data(), x.data(), w.data(), grstd.data(), N, C); });
  check((std::string(name) + " dx").c_str(), gg, dx, 1e-5);
  check((std::string(name) + " dw").c_str(), gdw, dw, 1e-5);
}

static void rope_case(int tokens, int heads, int hs, double theta) {
  auto x = rnd((size_t)tokens * heads * hs, 2);
  std::vector<int> pos(tokens);
  for (auto& p : pos) p = rng() % 70000;
  int half = hs / 2;
  std::vector<float> inv(half);
  for (int i = 0; i < half; i++) { float e = (float)(2 * i) / (float)(2 * half); inv[i] = 1 / (float)pow(theta, (double)e); }
  std::vector<double> want(x.size());
  for (int t = 0; t < tokens; t++) for (int i = 0; i < half; i++) {
    float a = (float)pos[t] * inv[i]; float c = (float)cos((double)a), s = (float)sin((double)a);
    for (int h = 0; h < heads; h++) { size_t lo = ((size_t)t * heads + h) * hs + i; want[lo] = x[lo] * c - x[lo + half] * s; want[lo + half] = x[lo + half] * c + x[lo] * s; }
  }
  int err = 0;
  long long total = (long long)tokens * half;
  emu_launch({(unsigned)min(4096, (int)((total + 255) / 256)), 1, 1}, {256, 1, 1}, 0, [&] { rope(x.data(), x.data(), pos.data(), inv.data(), tokens, heads, hs, 1.0f, &err); });
  check("rope in place", x, want, 1e-6);
}

static void sumsq_case(long long n) {
  auto x = rnd(n, 3);
  double want = 0; for (auto v : x) want += (double)v * v;
  int blocks = (int)min(1024, (int)((n + 1023) / 1024));
  std::vector<double> partials(blocks, nan(""));
  emu_launch({(unsigned)blocks, 1, 1}, {256, 1, 1}, 0, [&] { sum_squares(partials.data(), x.data(), n); });
  double got = 0; for (auto p : partials) got += p;
  bool ok = fabs(got - want) <= 1e-12 * want;
  if (!ok) failures++;
  printf("%s sum_squares n=%lld: got %.17g want %.17g\n", ok ? "ok  " : "FAIL", n, got, want);
}

int main() {
  // Head sizes below a warp (16), between builds (80, 130), GQA 1, 2 and 4,
  // partial tiles and packed segments.
  attention_case(1, 1, 1, 1, 64, {});
  attention_case(2, 37, 4, 1, 16, {});
  attention_case(1, 70, 4, 2, 64, {});
  {
    std::vector<int> seg(2 * 70);
    std::vector<std::vector<int>> starts = {{0, 5, 33, 64}, {0, 40, 61}};
    for (int b = 0; b < 2; b++) for (int t = 0; t < 70; t++) { int s = 0; for (int st : starts[b]) if (t >= st) s = st; seg[b * 70 + t] = s; }
    attention_case(2, 70, 4, 4, 80, seg);
  }
  {
    std::vector<int> seg(65);
    for (int t = 0; t < 65; t++) seg[t] = t >= 32 ? 32 : (t >= 31 ? 31 : 0);
    attention_case(1, 65, 2, 2, 130, seg);
  }

  decode_case(1, 1, 1, 1, 1, 1, 64);
  decode_case(2, 1, 40, 30, 4, 2, 64);
  decode_case(2, 5, 40, 30, 8, 2, 128);
  decode_case(1, 37, 80, 80, 4, 4, 48);

  ce_case(3, 1001, 0.25f);
  ce_case(2, 5, 1.0f);

  rmsnorm_case(1, 1);
  rmsnorm_case(3, 7);
  rmsnorm_case(300, 100);
  rmsnorm_case(5, 2048);

  rope_case(7, 3, 64, 1e6);
  rope_case(2, 1, 2, 1e4);
  sumsq_case(1);
  sumsq_case(100003);

  printf("%d failures\n", failures);
  return failures != 0;
}
