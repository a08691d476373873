// png: the built-in image reader as Analyse uses it — PNG.decode with the daemon's default limits
// (64 MiB, 8192 per side), then the model input (Preprocessing) and the lung field of the
// decoded image. Oracle: a decoded image encodes and decodes to itself.
import Foundation
import Imaging

func fuzzPNG(_ bytes: UnsafeRawBufferPointer) {
    let options = PNGReadOptions(maxDimension: 8192, maxFileBytes: 64 << 20)
    let header = try? PNG.header(of: bytes)
    guard let image = try? PNG.decode(buffer: bytes, options: options) else { return }
    fuzzCheck(header?.width == image.width && header?.height == image.height, "IHDR \(String(describing: header)) but decoded \(image.width)×\(image.height)")
    fuzzCheck(image.samples.count == image.width * image.height * image.channels, "sample count")
    let input = Preprocessing.modelInput(image)
    fuzzCheck(input.count == 3 * Preprocessing.modelSide * Preprocessing.modelSide, "model input size")
    _ = LungField.area(image.grayImage())
    // Round trip (small images only: encoding is slow and the decode above is what is fuzzed).
    if image.width * image.height <= 1 << 16 {
        do {
            let again = try PNG.decode(PNG.encode(image))
            fuzzCheck(again == image, "PNG round trip changed a \(image.width)×\(image.height) \(image.format) \(image.bitDepth)-bit image")
        } catch {
            fuzzCheck(false, "a decoded image does not round-trip: \(error)")
        }
    }
}
