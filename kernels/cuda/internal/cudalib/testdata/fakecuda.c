// fakecuda.c: a host-memory stand-in for libcuda and libcublas, so that the
// binding's tests run without a GPU. It exports the entry points that cudalib
// loads, with the C signatures of cuda.h and cublas_api.h (CUDA 12). Like a real
// driver, it checks the current context of the calling thread, live handles,
// argument ranges and the kernel parameter array, where the binding could go
// wrong. Device memory is host memory, streams run every operation at once, and
// the one kernel, block_sum_bf16, runs on the host.
//
// Build: cc -shared -fPIC -O1 -o libfakecuda.so fakecuda.c -lm
// fakecuda_set_devices(n) sets how many devices cuInit finds (1 by default),
// fakecuda_fail_cublas_create(1) makes cublasCreate_v2 fail, and
// fakecuda_primary_refs() returns how often the primary context is retained.

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef int CUresult;
typedef int cublasStatus_t;

enum {
    CUDA_SUCCESS = 0,
    CUDA_ERROR_INVALID_VALUE = 1,
    CUDA_ERROR_OUT_OF_MEMORY = 2,
    CUDA_ERROR_NOT_INITIALIZED = 3,
    CUDA_ERROR_NO_DEVICE = 100,
    CUDA_ERROR_INVALID_DEVICE = 101,
    CUDA_ERROR_INVALID_CONTEXT = 201,
    CUDA_ERROR_INVALID_PTX = 218,
    CUDA_ERROR_INVALID_HANDLE = 400,
    CUDA_ERROR_NOT_FOUND = 500,
};

enum {
    CUBLAS_STATUS_SUCCESS = 0,
    CUBLAS_STATUS_NOT_INITIALIZED = 1,
    CUBLAS_STATUS_INVALID_VALUE = 7,
};

#define FAKE_CONTEXT ((uintptr_t)0xC0DE0000u)
#define FAKE_MODULE ((uintptr_t)0x30D0000u)
#define FAKE_FUNCTION ((uintptr_t)0xF0000001u)
#define TOTAL_MEMORY ((size_t)16 << 30)
#define MAX_SHARED_OPTIN 232448
#define STATIC_SHARED 128 // block_sum_bf16's __shared__ float[32]
#define MAX_HANDLES 256

static int device_count = 1;
static int initialized;
static int primary_refs;
static size_t allocated;
static __thread uintptr_t current_context;

static int fail_cublas_create;

void fakecuda_set_devices(int n) { device_count = n; }
void fakecuda_fail_cublas_create(int fail) { fail_cublas_create = fail; }
int fakecuda_primary_refs(void) { return primary_refs; }

static int has_context(void) { return initialized && primary_refs > 0 && current_context == FAKE_CONTEXT; }

// Streams and events are indexes into these tables, plus one, so 0 stays the
// legacy default stream.
static int stream_live[MAX_HANDLES];
static int event_live[MAX_HANDLES];
static int event_timing[MAX_HANDLES];
static long event_time[MAX_HANDLES];
static long clock_ticks;
static int shared_limit = 48 << 10;

static int live_stream(uintptr_t s) { return s == 0 || (s <= MAX_HANDLES && stream_live[s - 1]); }
static int live_event(uintptr_t e) { return e >= 1 && e <= MAX_HANDLES && event_live[e - 1]; }

static const struct { int code; const char *name, *message; } driver_errors[] = {
    {CUDA_SUCCESS, "CUDA_SUCCESS", "no error"},
    {CUDA_ERROR_INVALID_VALUE, "CUDA_ERROR_INVALID_VALUE", "invalid argument"},
    {CUDA_ERROR_OUT_OF_MEMORY, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"},
    {CUDA_ERROR_NOT_INITIALIZED, "CUDA_ERROR_NOT_INITIALIZED", "initialization error"},
    {CUDA_ERROR_NO_DEVICE, "CUDA_ERROR_NO_DEVICE", "no CUDA-capable device is detected"},
    {CUDA_ERROR_INVALID_DEVICE, "CUDA_ERROR_INVALID_DEVICE", "invalid device ordinal"},
    {CUDA_ERROR_INVALID_CONTEXT, "CUDA_ERROR_INVALID_CONTEXT", "invalid device context"},
    {CUDA_ERROR_INVALID_PTX, "CUDA_ERROR_INVALID_PTX", "a PTX JIT compilation failed"},
    {CUDA_ERROR_INVALID_HANDLE, "CUDA_ERROR_INVALID_HANDLE", "invalid resource handle"},
    {CUDA_ERROR_NOT_FOUND, "CUDA_ERROR_NOT_FOUND", "named symbol not found"},
};

CUresult cuGetErrorName(CUresult code, const char **name) {
    for (size_t i = 0; i < sizeof driver_errors / sizeof driver_errors[0]; i++) {
        if (driver_errors[i].code == code) {
            *name = driver_errors[i].name;
            return CUDA_SUCCESS;
        }
    }
    *name = NULL;
    return CUDA_ERROR_INVALID_VALUE;
}

CUresult cuGetErrorString(CUresult code, const char **message) {
    for (size_t i = 0; i < sizeof driver_errors / sizeof driver_errors[0]; i++) {
        if (driver_errors[i].code == code) {
            *message = driver_errors[i].message;
            return CUDA_SUCCESS;
        }
    }
    *message = NULL;
    return CUDA_ERROR_INVALID_VALUE;
}

CUresult cuInit(unsigned int flags) {
    if (flags != 0) return CUDA_ERROR_INVALID_VALUE;
    if (device_count == 0) return CUDA_ERROR_NO_DEVICE;
    initialized = 1;
    return CUDA_SUCCESS;
}

CUresult cuDriverGetVersion(int *version) {
    *version = 12040;
    return CUDA_SUCCESS;
}

CUresult cuDeviceGetCount(int *count) {
    if (!initialized) return CUDA_ERROR_NOT_INITIALIZED;
    *count = device_count;
    return CUDA_SUCCESS;
}

CUresult cuDeviceGet(int *device, int ordinal) {
    if (!initialized) return CUDA_ERROR_NOT_INITIALIZED;
    if (ordinal < 0 || ordinal >= device_count) return CUDA_ERROR_INVALID_DEVICE;
    *device = ordinal;
    return CUDA_SUCCESS;
}

CUresult cuDeviceGetAttribute(int *value, int attribute, int device) {
    if (device < 0 || device >= device_count) return CUDA_ERROR_INVALID_DEVICE;
    switch (attribute) {
    case 16: *value = 132; return CUDA_SUCCESS;             // multiprocessors
    case 75: *value = 9; return CUDA_SUCCESS;               // compute capability major
    case 76: *value = 0; return CUDA_SUCCESS;               // compute capability minor
    case 97: *value = MAX_SHARED_OPTIN; return CUDA_SUCCESS; // opt-in shared memory per block
    }
    return CUDA_ERROR_INVALID_VALUE;
}

CUresult cuDeviceGetName(char *name, int length, int device) {
    if (device < 0 || device >= device_count || length <= 0) return CUDA_ERROR_INVALID_VALUE;
    strncpy(name, "Fake CUDA Device", (size_t)length - 1);
    name[length - 1] = 0;
    return CUDA_SUCCESS;
}

CUresult cuDeviceTotalMem_v2(size_t *bytes, int device) {
    if (device < 0 || device >= device_count) return CUDA_ERROR_INVALID_DEVICE;
    *bytes = TOTAL_MEMORY;
    return CUDA_SUCCESS;
}

CUresult cuDevicePrimaryCtxRetain(uintptr_t *context, int device) {
    if (!initialized) return CUDA_ERROR_NOT_INITIALIZED;
    if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
    primary_refs++;
    *context = FAKE_CONTEXT;
    return CUDA_SUCCESS;
}

CUresult cuDevicePrimaryCtxRelease_v2(int device) {
    if (device != 0 || primary_refs == 0) return CUDA_ERROR_INVALID_CONTEXT;
    primary_refs--;
    return CUDA_SUCCESS;
}

CUresult cuCtxSetCurrent(uintptr_t context) {
    if (context != 0 && context != FAKE_CONTEXT) return CUDA_ERROR_INVALID_CONTEXT;
    current_context = context;
    return CUDA_SUCCESS;
}

// Device allocations carry their size in front, so that cuMemFree can check them.
#define ALLOC_MAGIC 0x5AFEC0DEu
struct header { uint32_t magic; size_t bytes; };

CUresult cuMemAlloc_v2(uintptr_t *ptr, size_t bytes) {
    if (!has_context()) return CUDA_ERROR_INVALID_CONTEXT;
    if (bytes == 0) return CUDA_ERROR_INVALID_VALUE;
    if (bytes > TOTAL_MEMORY - __atomic_load_n(&allocated, __ATOMIC_SEQ_CST)) return CUDA_ERROR_OUT_OF_MEMORY;
    struct header *h = malloc(sizeof(struct header) + bytes);
    if (h == NULL) return CUDA_ERROR_OUT_OF_MEMORY;
    h->magic = ALLOC_MAGIC;
    h->bytes = bytes;
    __atomic_fetch_add(&allocated, bytes, __ATOMIC_SEQ_CST);
    *ptr = (uintptr_t)(h + 1);
    return CUDA_SUCCESS;
}

CUresult cuMemFree_v2(uintptr_t ptr) {
    if (!has_context()) return CUDA_ERROR_INVALID_CONTEXT;
    struct header *h = (struct header *)ptr - 1;
    if (ptr == 0 || h->magic != ALLOC_MAGIC) return CUDA_ERROR_INVALID_VALUE;
    h->magic = 0;
    __atomic_fetch_sub(&allocated, h->bytes, __ATOMIC_SEQ_CST);
    free(h);
    return CUDA_SUCCESS;
}

CUresult cuMemGetInfo_v2(size_t *free_bytes, size_t *total) {
    if (!has_context()) return CUDA_ERROR_INVALID_CONTEXT;
    *free_bytes = TOTAL_MEMORY - __atomic_load_n(&allocated, __ATOMIC_SEQ_CST);
    *total = TOTAL_MEMORY;
    return CUDA_SUCCESS;
}

CUresult cuMemHostAlloc(void **ptr, size_t bytes, unsigned int flags) {
    if (!has_context()) return CUDA_ERROR_INVALID_CONTEXT;
    if (bytes == 0 || flags > 7) return CUDA_ERROR_INVALID_VALUE;
    *ptr = malloc(bytes);
    return *ptr ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}

CUresult cuMemFreeHost(void *ptr) {
    if (!has_context()) return CUDA_ERROR_INVALID_CONTEXT;
    free(ptr);
    return CUDA_SUCCESS;
}

CUresult cuMemsetD32Async(uintptr_t dst, unsigned int value, size_t count, uintptr_t stream) {
    if (!has_context()) return CUDA_ERROR_INVALID_CONTEXT;
    if (!live_stream(stream)) return CUDA_ERROR_INVALID_HANDLE;
    uint32_t *p = (uint32_t *)dst;
    for (size_t i = 0; i < count; i++) p[i] = value;
    return CUDA_SUCCESS;
}

static CUresult copy(void *dst, const void *src, size_t bytes, uintptr_t stream) {
    if (!has_context()) return CUDA_ERROR_INVALID_CONTEXT;
    if (!live_stream(stream)) return CUDA_ERROR_INVALID_HANDLE;
    if (dst == NULL || src == NULL) return CUDA_ERROR_INVALID_VALUE;
    memmove(dst, src, bytes);
    return CUDA_SUCCESS;
}

CUresult cuMemcpyHtoDAsync_v2(uintptr_t dst, const void *src, size_t bytes, uintptr_t stream) {
    return copy((void *)dst, src, bytes, stream);
}

CUresult cuMemcpyDtoHAsync_v2(void *dst, uintptr_t src, size_t bytes, uintptr_t stream) {
    return copy(dst, (const void *)src, bytes, stream);
}

CUresult cuMemcpyDtoDAsync_v2(uintptr_t dst, uintptr_t src, size_t bytes, uintptr_t stream) {
    return copy((void *)dst, (const void *)src, bytes, stream);
}

CUresult cuStreamCreate(uintptr_t *stream, unsigned int flags) {
    if (!has_context()) return CUDA_ERROR_INVALID_CONTEXT;
    if (flags > 1) return CUDA_ERROR_INVALID_VALUE;
    for (int i = 0; i < MAX_HANDLES; i++) {
        if (!stream_live[i]) {
            stream_live[i] = 1;
            *stream = (uintptr_t)i + 1;
            return CUDA_SUCCESS;
        }
    }
    return CUDA_ERROR_OUT_OF_MEMORY;
}

CUresult cuStreamDestroy_v2(uintptr_t stream) {
    if (!has_context()) return CUDA_ERROR_INVALID_CONTEXT;
    if (stream == 0 || !live_stream(stream)) return CUDA_ERROR_INVALID_HANDLE;
    stream_live[stream - 1] = 0;
    return CUDA_SUCCESS;
}

CUresult cuStreamSynchronize(uintptr_t stream) {
    if (!has_context()) return CUDA_ERROR_INVALID_CONTEXT;
    return live_stream(stream) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

CUresult cuStreamWaitEvent(uintptr_t stream, uintptr_t event, unsigned int flags) {
    if (!has_context()) return CUDA_ERROR_INVALID_CONTEXT;
    if (!live_stream(stream) || !live_event(event)) return CUDA_ERROR_INVALID_HANDLE;
    return flags == 0 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

CUresult cuEventCreate(uintptr_t *event, unsigned int flags) {
    if (!has_context()) return CUDA_ERROR_INVALID_CONTEXT;
    if (flags > 7) return CUDA_ERROR_INVALID_VALUE;
    for (int i = 0; i < MAX_HANDLES; i++) {
        if (!event_live[i]) {
            event_live[i] = 1;
            event_timing[i] = (flags & 2) == 0;
            event_time[i] = -1;
            *event = (uintptr_t)i + 1;
            return CUDA_SUCCESS;
        }
    }
    return CUDA_ERROR_OUT_OF_MEMORY;
}

CUresult cuEventRecord(uintptr_t event, uintptr_t stream) {
    if (!has_context()) return CUDA_ERROR_INVALID_CONTEXT;
    if (!live_event(event) || !live_stream(stream)) return CUDA_ERROR_INVALID_HANDLE;
    event_time[event - 1] = ++clock_ticks;
    return CUDA_SUCCESS;
}

CUresult cuEventSynchronize(uintptr_t event) {
    if (!has_context()) return CUDA_ERROR_INVALID_CONTEXT;
    return live_event(event) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

CUresult cuEventElapsedTime(float *milliseconds, uintptr_t start, uintptr_t end) {
    if (!has_context()) return CUDA_ERROR_INVALID_CONTEXT;
    if (!live_event(start) || !live_event(end)) return CUDA_ERROR_INVALID_HANDLE;
    if (!event_timing[start - 1] || !event_timing[end - 1]) return CUDA_ERROR_INVALID_HANDLE;
    *milliseconds = 0.001f * (float)(event_time[end - 1] - event_time[start - 1]);
    return CUDA_SUCCESS;
}

CUresult cuEventDestroy_v2(uintptr_t event) {
    if (!has_context()) return CUDA_ERROR_INVALID_CONTEXT;
    if (!live_event(event)) return CUDA_ERROR_INVALID_HANDLE;
    event_live[event - 1] = 0;
    return CUDA_SUCCESS;
}

CUresult cuModuleLoadDataEx(uintptr_t *module, const void *image, unsigned int num_options, int *options, void **values) {
    if (!has_context()) return CUDA_ERROR_INVALID_CONTEXT;
    const char *text = image;
    if (memcmp(text, "\x7f" "ELF", 4) == 0) {
        *module = FAKE_MODULE;
        return CUDA_SUCCESS;
    }
    if (strstr(text, ".version") == NULL) return CUDA_ERROR_INVALID_VALUE;
    if (strstr(text, ".entry") != NULL) {
        *module = FAKE_MODULE;
        return CUDA_SUCCESS;
    }
    // PTX without a kernel is the tests' broken PTX: report it through the log.
    char *log = NULL;
    size_t log_size = 0;
    for (unsigned int i = 0; i < num_options; i++) {
        if (options[i] == 5) log = values[i];
        if (options[i] == 6) log_size = (size_t)(uintptr_t)values[i];
    }
    if (log != NULL && log_size > 0) {
        strncpy(log, "ptxas application ptx input, line 4; fatal   : Parsing error near 'this'", log_size - 1);
        log[log_size - 1] = 0;
    }
    return CUDA_ERROR_INVALID_PTX;
}

CUresult cuModuleGetFunction(uintptr_t *function, uintptr_t module, const char *name) {
    if (!has_context()) return CUDA_ERROR_INVALID_CONTEXT;
    if (module != FAKE_MODULE) return CUDA_ERROR_INVALID_HANDLE;
    if (strcmp(name, "block_sum_bf16") != 0) return CUDA_ERROR_NOT_FOUND;
    *function = FAKE_FUNCTION;
    return CUDA_SUCCESS;
}

CUresult cuModuleUnload(uintptr_t module) {
    if (!has_context()) return CUDA_ERROR_INVALID_CONTEXT;
    return module == FAKE_MODULE ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

CUresult cuFuncSetAttribute(uintptr_t function, int attribute, int value) {
    if (!has_context()) return CUDA_ERROR_INVALID_CONTEXT;
    if (function != FAKE_FUNCTION) return CUDA_ERROR_INVALID_HANDLE;
    if (attribute != 8 || value < 0 || value > MAX_SHARED_OPTIN - STATIC_SHARED) return CUDA_ERROR_INVALID_VALUE;
    shared_limit = value;
    return CUDA_SUCCESS;
}

// block_sum_bf16(const unsigned short* in, unsigned short* out, float* sums, float scale, int n)
static const size_t param_offsets[] = {0, 8, 16, 24, 28};
static const size_t param_sizes[] = {8, 8, 8, 4, 4};

CUresult cuFuncGetParamInfo(uintptr_t function, size_t index, size_t *offset, size_t *size) {
    if (function != FAKE_FUNCTION) return CUDA_ERROR_INVALID_HANDLE;
    if (index >= 5) return CUDA_ERROR_INVALID_VALUE;
    *offset = param_offsets[index];
    *size = param_sizes[index];
    return CUDA_SUCCESS;
}

static float bf16_to_float(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint16_t float_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

CUresult cuLaunchKernel(uintptr_t function, unsigned int gx, unsigned int gy, unsigned int gz,
                        unsigned int bx, unsigned int by, unsigned int bz, unsigned int shared,
                        uintptr_t stream, void **params, void **extra) {
    if (!has_context()) return CUDA_ERROR_INVALID_CONTEXT;
    if (function != FAKE_FUNCTION || !live_stream(stream)) return CUDA_ERROR_INVALID_HANDLE;
    if (gx == 0 || gy == 0 || gz == 0 || bx == 0 || by == 0 || bz == 0) return CUDA_ERROR_INVALID_VALUE;
    if ((unsigned long)bx * by * bz > 1024 || shared > (unsigned int)shared_limit) return CUDA_ERROR_INVALID_VALUE;
    if (params == NULL || extra != NULL) return CUDA_ERROR_INVALID_VALUE;
    const uint16_t *in = *(const uint16_t **)params[0];
    uint16_t *out = *(uint16_t **)params[1];
    float *sums = *(float **)params[2];
    float scale = *(const float *)params[3];
    int n = *(const int *)params[4];
    for (unsigned int block = 0; block < gx; block++) {
        float sum = 0;
        for (unsigned int thread = 0; thread < bx; thread++) {
            int i = (int)(block * bx + thread);
            if (i < n) {
                float v = bf16_to_float(in[i]);
                out[i] = float_to_bf16(v * scale);
                sum += v;
            }
        }
        sums[block] = sum;
    }
    return CUDA_SUCCESS;
}

// cuBLAS.

struct handle { uintptr_t stream; void *workspace; size_t workspace_bytes; int math_mode; int stream_set; };

static const char *status_name(cublasStatus_t s) {
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    }
    return "CUBLAS_STATUS_UNKNOWN";
}

const char *cublasGetStatusName(cublasStatus_t s) { return status_name(s); }
const char *cublasGetStatusString(cublasStatus_t s) {
    return s == CUBLAS_STATUS_INVALID_VALUE ? "an unsupported value or parameter was passed to the function" : "fake status";
}

cublasStatus_t cublasGetProperty(int property, int *value) {
    static const int version[] = {12, 4, 5};
    if (property < 0 || property > 2) return CUBLAS_STATUS_INVALID_VALUE;
    *value = version[property];
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasCreate_v2(struct handle **h) {
    if (!has_context() || fail_cublas_create) return CUBLAS_STATUS_NOT_INITIALIZED;
    *h = calloc(1, sizeof **h);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy_v2(struct handle *h) {
    if (h == NULL) return CUBLAS_STATUS_NOT_INITIALIZED;
    free(h);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream_v2(struct handle *h, uintptr_t stream) {
    if (h == NULL) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!live_stream(stream)) return CUBLAS_STATUS_INVALID_VALUE;
    h->stream = stream;
    h->stream_set = 1;
    h->workspace = NULL; // as in cuBLAS, a new stream resets the workspace
    h->workspace_bytes = 0;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetWorkspace_v2(struct handle *h, void *workspace, size_t bytes) {
    if (h == NULL) return CUBLAS_STATUS_NOT_INITIALIZED;
    h->workspace = workspace;
    h->workspace_bytes = bytes;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(struct handle *h, int mode) {
    if (h == NULL) return CUBLAS_STATUS_NOT_INITIALIZED;
    if ((mode & ~16) > 3) return CUBLAS_STATUS_INVALID_VALUE;
    h->math_mode = mode;
    return CUBLAS_STATUS_SUCCESS;
}

static double load(const void *p, int type, long index) {
    return type == 0 ? ((const float *)p)[index] : bf16_to_float(((const uint16_t *)p)[index]);
}

static void store(void *p, int type, long index, double v) {
    if (type == 0) {
        ((float *)p)[index] = (float)v;
    } else {
        ((uint16_t *)p)[index] = float_to_bf16((float)v);
    }
}

static long max1(long v) { return v > 1 ? v : 1; }

cublasStatus_t cublasGemmEx(struct handle *h, int transa, int transb, int m, int n, int k,
                            const void *alpha, const void *A, int atype, int lda,
                            const void *B, int btype, int ldb, const void *beta,
                            void *C, int ctype, int ldc, int compute, int algo) {
    if (h == NULL || !has_context()) return CUBLAS_STATUS_NOT_INITIALIZED;
    // The context's handle must run on its compute stream with its own workspace.
    if (!h->stream_set || h->stream == 0 || h->workspace == NULL || h->math_mode != 16) return CUBLAS_STATUS_NOT_INITIALIZED;
    if ((transa != 0 && transa != 1) || (transb != 0 && transb != 1)) return CUBLAS_STATUS_INVALID_VALUE;
    if (m < 0 || n < 0 || k < 0) return CUBLAS_STATUS_INVALID_VALUE;
    if (lda < max1(transa ? k : m) || ldb < max1(transb ? n : k) || ldc < max1(m)) return CUBLAS_STATUS_INVALID_VALUE;
    if ((atype != 0 && atype != 14) || btype != atype || (ctype != 0 && ctype != 14)) return CUBLAS_STATUS_INVALID_VALUE;
    if (compute != 68 && compute != 69 && compute != 74 && compute != 75 && compute != 77) return CUBLAS_STATUS_INVALID_VALUE;
    if (algo != -1 || alpha == NULL || beta == NULL) return CUBLAS_STATUS_INVALID_VALUE;
    double a_scale = *(const float *)alpha, b_scale = *(const float *)beta;
    for (int j = 0; j < n; j++) {
        for (int i = 0; i < m; i++) {
            double sum = 0;
            for (int p = 0; p < k; p++) {
                double a = load(A, atype, transa ? p + (long)i * lda : i + (long)p * lda);
                double b = load(B, btype, transb ? j + (long)p * ldb : p + (long)j * ldb);
                sum += a * b;
            }
            double c = b_scale != 0 ? load(C, ctype, i + (long)j * ldc) : 0;
            store(C, ctype, i + (long)j * ldc, a_scale * sum + b_scale * c);
        }
    }
    return CUBLAS_STATUS_SUCCESS;
}
