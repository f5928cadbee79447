/*
 * Splits text with Qwen3's pre-tokenizer pattern the way Hugging Face tokenizers does,
 * as an oracle for the Go scanner in package tokenizer.
 *
 *   cc -O2 -o split split.c -lonig
 *   split < records > boundaries
 *   split --version
 *
 * Hugging Face's Split pre-tokenizer (behavior Isolated) compiles the pattern with the
 * Rust onig crate, whose Regex::new uses ONIG_OPTION_NONE, ONIG_SYNTAX_DEFAULT and the
 * UTF-8 encoding. It then walks the matches from left to right and emits every match and
 * every unmatched gap between them as a piece. This program does the same with the
 * system's Oniguruma (Debian's libonig-dev).
 *
 * Input: a sequence of records, each a 4-byte little-endian length followed by that many
 * bytes of UTF-8 text. Output: one line per record with the byte offset at which each
 * piece ends, ascending and separated by single spaces, so that the last offset is the
 * record's length. An empty record gives an empty line.
 *
 * Exit status: 0 on success, 1 when a record is truncated, is not valid UTF-8 or makes
 * onig_search fail, 2 on a usage error.
 */
#include <oniguruma.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The pre_tokenizer Split pattern of Qwen3's tokenizer.json (the same as Qwen2's). */
static const char PATTERN[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)"
    "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+"
    "|\\p{N}"
    "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
    "|\\s*[\\r\\n]+"
    "|\\s+(?!\\S)"
    "|\\s+";

/* Returns the length of the UTF-8 sequence at s, or 0 when it is invalid (overlong,
 * a surrogate, above U+10FFFF or cut off by end). */
static size_t utf8_sequence_length(const unsigned char *s, const unsigned char *end) {
  unsigned char b = s[0];
  size_t n;
  uint32_t c;
  if (b < 0x80) return 1;
  if (b >= 0xC2 && b <= 0xDF) {
    n = 2;
    c = b & 0x1F;
  } else if (b >= 0xE0 && b <= 0xEF) {
    n = 3;
    c = b & 0x0F;
  } else if (b >= 0xF0 && b <= 0xF4) {
    n = 4;
    c = b & 0x07;
  } else {
    return 0;
  }
  if ((size_t)(end - s) < n) return 0;
  for (size_t i = 1; i < n; i++) {
    if ((s[i] & 0xC0) != 0x80) return 0;
    c = (c << 6) | (s[i] & 0x3F);
  }
  if ((n == 3 && c < 0x800) || (n == 4 && c < 0x10000)) return 0;
  if (c >= 0xD800 && c <= 0xDFFF) return 0;
  if (c > 0x10FFFF) return 0;
  return n;
}

static int valid_utf8(const unsigned char *s, size_t len) {
  const unsigned char *end = s + len;
  while (s < end) {
    size_t n = utf8_sequence_length(s, end);
    if (n == 0) return 0;
    s += n;
  }
  return 1;
}

/* Reads exactly len bytes. Returns 1 on success, 0 when the input ends before the first
 * byte and -1 when it ends in the middle. */
static int read_full(unsigned char *buf, size_t len) {
  size_t got = fread(buf, 1, len, stdin);
  if (got == len) return 1;
  return got == 0 ? 0 : -1;
}

/* Writes the piece boundaries of text[0:len] as one line. Returns 0, or the negative
 * Oniguruma error code of a failed search. */
static int split_record(regex_t *reg, OnigRegion *region, const unsigned char *text,
                        size_t len) {
  const unsigned char *end = text + len;
  size_t pos = 0;
  size_t prev = 0; /* end of the last emitted piece */
  int first = 1;

  while (pos <= len) {
    int at = onig_search(reg, text, end, text + pos, end, region, ONIG_OPTION_NONE);
    if (at == ONIG_MISMATCH) break;
    if (at < 0) return at;

    size_t match_start = (size_t)region->beg[0];
    size_t match_end = (size_t)region->end[0];
    if (match_end == match_start) {
      /* The pattern has no empty match, but step over one character anyway, as the onig
       * crate's find_iter does, so that an edited pattern cannot loop forever. */
      if (match_start == len) break;
      pos = match_start + utf8_sequence_length(text + match_start, end);
      continue;
    }
    if (match_start != prev) {
      printf(first ? "%zu" : " %zu", match_start);
      first = 0;
    }
    printf(first ? "%zu" : " %zu", match_end);
    first = 0;
    prev = match_end;
    pos = match_end;
  }
  if (prev != len) {
    printf(first ? "%zu" : " %zu", len);
  }
  putchar('\n');
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "--version") == 0) {
    printf("Oniguruma %s\n", onig_version());
    return 0;
  }
  if (argc != 1) {
    fprintf(stderr,
            "usage: %s < records\n"
            "  records: 4-byte little-endian length, then that many bytes of UTF-8, repeated\n"
            "  %s --version prints the Oniguruma version\n",
            argv[0], argv[0]);
    return 2;
  }

  OnigEncoding encodings[1] = {ONIG_ENCODING_UTF8};
  onig_initialize(encodings, 1);

  regex_t *reg;
  OnigErrorInfo einfo;
  int r = onig_new(&reg, (const OnigUChar *)PATTERN,
                   (const OnigUChar *)PATTERN + strlen(PATTERN), ONIG_OPTION_NONE,
                   ONIG_ENCODING_UTF8, ONIG_SYNTAX_DEFAULT, &einfo);
  if (r != ONIG_NORMAL) {
    OnigUChar message[ONIG_MAX_ERROR_MESSAGE_LEN];
    onig_error_code_to_str(message, r, &einfo);
    fprintf(stderr, "split: compiling the pattern failed: %s\n", message);
    return 1;
  }
  OnigRegion *region = onig_region_new();

  unsigned char *buf = NULL;
  size_t cap = 0;
  for (unsigned long record = 0;; record++) {
    unsigned char header[4];
    int got = read_full(header, 4);
    if (got == 0) break;
    if (got < 0) {
      fprintf(stderr, "split: record %lu: input ends inside the 4-byte length\n", record);
      return 1;
    }
    size_t len = (size_t)header[0] | (size_t)header[1] << 8 | (size_t)header[2] << 16 |
                 (size_t)header[3] << 24;
    if (len > cap) {
      cap = len;
      buf = realloc(buf, cap);
      if (buf == NULL) {
        fprintf(stderr, "split: record %lu: out of memory for %zu bytes\n", record, len);
        return 1;
      }
    }
    if (len > 0 && read_full(buf, len) != 1) {
      fprintf(stderr, "split: record %lu: input ends before its %zu bytes\n", record, len);
      return 1;
    }
    if (!valid_utf8(buf, len)) {
      fprintf(stderr, "split: record %lu: text is not valid UTF-8\n", record);
      return 1;
    }
    r = split_record(reg, region, buf, len);
    if (r != 0) {
      OnigUChar message[ONIG_MAX_ERROR_MESSAGE_LEN];
      onig_error_code_to_str(message, r);
      fprintf(stderr, "split: record %lu: onig_search failed: %s\n", record, message);
      return 1;
    }
  }

  if (fflush(stdout) != 0 || ferror(stdout)) {
    perror("split: writing the output failed");
    return 1;
  }
  free(buf);
  onig_region_free(region, 1);
  onig_free(reg);
  onig_end();
  return 0;
}
