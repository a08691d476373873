/* make_jpeg_seeds.c — writes small JPEG files of every kind the jpeg plugin meets (gray, YCbCr with
 * and without subsampling, progressive, restart markers, arithmetic coding, CMYK, JFIF density) into
 * the folder given, each prefixed with the fuzz target's mode byte. Used by Fuzz/make-seeds. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jpeglib.h>

static void write_jpeg(const char *dir, const char *name, int width, int height, int components, J_COLOR_SPACE space,
                       int progressive, int restart, int arith, int subsample, int density) {
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr e;
    unsigned char *buffer = NULL;
    unsigned long size = 0;
    c.err = jpeg_std_error(&e);
    jpeg_create_compress(&c);
    jpeg_mem_dest(&c, &buffer, &size);
    c.image_width = (JDIMENSION)width;
    c.image_height = (JDIMENSION)height;
    c.input_components = components;
    c.in_color_space = space;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, 60, TRUE);
    if (progressive) jpeg_simple_progression(&c);
    c.restart_interval = (unsigned)restart;
    c.arith_code = arith ? TRUE : FALSE;
    if (components == 3 && !subsample) for (int i = 0; i < 3; i++) c.comp_info[i].h_samp_factor = c.comp_info[i].v_samp_factor = 1;
    if (density) { c.density_unit = (UINT8)density; c.X_density = 40; c.Y_density = 50; }
    jpeg_start_compress(&c, TRUE);
    unsigned char *row = malloc((size_t)width * components);
    while (c.next_scanline < c.image_height) {
        for (int i = 0; i < width * components; i++) row[i] = (unsigned char)((i * 37 + c.next_scanline * 11) & 0xFF);
        JSAMPROW rows[1] = {row};
        jpeg_write_scanlines(&c, rows, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.jpg", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) { perror(path); exit(1); }
    fputc(1, f); /* mode byte: options "{}", the full info struct */
    fwrite(buffer, 1, size, f);
    fclose(f);
    free(row);
    free(buffer);
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: make_jpeg_seeds DIR\n"); return 64; }
    const char *d = argv[1];
    write_jpeg(d, "gray", 9, 7, 1, JCS_GRAYSCALE, 0, 0, 0, 0, 0);
    write_jpeg(d, "rgb-444", 8, 8, 3, JCS_RGB, 0, 0, 0, 0, 0);
    write_jpeg(d, "rgb-420", 17, 9, 3, JCS_RGB, 0, 0, 0, 1, 0);
    write_jpeg(d, "progressive", 16, 16, 3, JCS_RGB, 1, 0, 0, 1, 0);
    write_jpeg(d, "progressive-gray", 12, 20, 1, JCS_GRAYSCALE, 1, 0, 0, 0, 0);
    write_jpeg(d, "restart", 32, 16, 1, JCS_GRAYSCALE, 0, 1, 0, 0, 0);
    write_jpeg(d, "arithmetic", 8, 8, 1, JCS_GRAYSCALE, 0, 0, 1, 0, 0);
    write_jpeg(d, "cmyk", 4, 4, 4, JCS_CMYK, 0, 0, 0, 0, 0);
    write_jpeg(d, "density-cm", 5, 5, 1, JCS_GRAYSCALE, 0, 0, 0, 0, 2);
    write_jpeg(d, "density-inch", 5, 5, 1, JCS_GRAYSCALE, 0, 0, 0, 0, 1);
    return 0;
}
