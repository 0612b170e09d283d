/* A WASI step in C, to the Argo Wasm plugin's file contract: reads /work/input.json, and
 * writes /work/result.json with what it could and could not reach. With the text "fail"
 * anywhere in its input it prints to stderr and exits with code 2.
 *
 * Built by the host's tests with `zig cc -target wasm32-wasi` (the PyPI ziglang package
 * carries the compiler and wasi-libc). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    static char input[65536];
    FILE *in = fopen("/work/input.json", "rb");
    if (!in) {
        fprintf(stderr, "cannot open the input\n");
        return 1;
    }
    size_t n = fread(input, 1, sizeof input - 1, in);
    fclose(in);
    input[n] = '\0';
    if (strstr(input, "fail")) {
        fprintf(stderr, "asked to fail\n");
        return 2;
    }
    FILE *outside = fopen("/etc/hostname", "rb");
    const char *home = getenv("HOME");
    FILE *out = fopen("/work/result.json", "wb");
    if (!out) {
        fprintf(stderr, "cannot write the result\n");
        return 1;
    }
    fprintf(out,
            "{\"phase\":\"Succeeded\",\"message\":\"hello from C\",\"outputs\":{"
            "\"parameters\":[{\"name\":\"input_bytes\",\"value\":%zu},"
            "{\"name\":\"program\",\"value\":\"%s\"},"
            "{\"name\":\"home\",\"value\":\"%s\"},"
            "{\"name\":\"outside\",\"value\":\"%s\"}],\"artifacts\":[]}}",
            n, argc > 0 ? argv[0] : "", home ? home : "unset", outside ? "read" : "refused");
    fclose(out);
    return 0;
}
