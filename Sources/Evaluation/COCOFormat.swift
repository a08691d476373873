// COCO JSON files: the ground-truth dataset (images, annotations, categories) and the results list.

import Foundation

/// An image entry of a COCO ground-truth file.
public struct COCOImage: Codable, Hashable, Sendable {
    /// Image id, referenced by annotations and results.
    public var id: Int
    /// Width in pixels.
    public var width: Int
    /// Height in pixels.
    public var height: Int
    /// File name, if given.
    public var fileName: String?

    private enum CodingKeys: String, CodingKey { case id, width, height, fileName = "file_name" }

    /// An image entry.
    public init(id: Int, width: Int, height: Int, fileName: String? = nil) {
        self.id = id
        self.width = width
        self.height = height
        self.fileName = fileName
    }
}

/// A category entry of a COCO ground-truth file.
public struct COCOCategory: Codable, Hashable, Sendable {
    /// Category id.
    public var id: Int
    /// Category name.
    public var name: String
    /// Super-category, if given.
    public var supercategory: String?

    /// A category entry.
    public init(id: Int, name: String, supercategory: String? = nil) {
        self.id = id
        self.name = name
        self.supercategory = supercategory
    }
}

/// A COCO segmentation: polygons, or an RLE with compressed or uncompressed counts.
public enum COCOSegmentation: Hashable, Sendable {
    /// One or more polygons `[x0, y0, x1, y1, …]` in pixel coordinates (parts of one object).
    case polygons([[Double]])
    /// An RLE whose counts were (or will be) written as COCO's compressed string.
    case rle(RLE)
    /// An RLE whose counts were (or will be) written as a plain list of numbers.
    case uncompressedRLE(RLE)

    /// The mask as an RLE: polygons are rasterised on an image of the given size and merged (COCO's
    /// `annToRLE`); an RLE keeps its own size, as COCO does.
    /// - Throws: `EvaluationError.invalidSegmentation` for polygons COCO rejects.
    public func rle(imageHeight: Int, imageWidth: Int) throws -> RLE {
        switch self {
        case .polygons(let p): return try RLE(polygons: p, height: imageHeight, width: imageWidth)
        case .rle(let r), .uncompressedRLE(let r): return r
        }
    }
}

extension COCOSegmentation: Codable {
    private enum RLEKeys: String, CodingKey { case size, counts }

    public init(from decoder: Decoder) throws {
        if let polygons = try? decoder.singleValueContainer().decode([[Double]].self) {
            self = .polygons(polygons)
            return
        }
        let c: KeyedDecodingContainer<RLEKeys>
        do { c = try decoder.container(keyedBy: RLEKeys.self) } catch {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath,
                                                    debugDescription: "segmentation is neither polygons nor an RLE object"))
        }
        let r = try RLE(from: decoder)
        self = (try? c.decode(String.self, forKey: .counts)) != nil ? .rle(r) : .uncompressedRLE(r)
    }

    public func encode(to encoder: Encoder) throws {
        switch self {
        case .polygons(let p):
            var c = encoder.singleValueContainer()
            try c.encode(p)
        case .rle(let r):
            try r.encode(to: encoder)
        case .uncompressedRLE(let r):
            var c = encoder.container(keyedBy: RLEKeys.self)
            try c.encode([r.height, r.width], forKey: .size)
            try c.encode(r.counts, forKey: .counts)
        }
    }
}

/// Decodes `iscrowd` written as 0/1 or as a boolean.
private func decodeFlag<K: CodingKey>(_ c: KeyedDecodingContainer<K>, _ key: K) throws -> Bool {
    if let b = try? c.decodeIfPresent(Bool.self, forKey: key) { return b }
    if let i = try c.decodeIfPresent(Int.self, forKey: key) { return i != 0 }
    return false
}

/// Decodes a box, treating a missing, `null` or empty `[]` box as absent.
private func decodeBox<K: CodingKey>(_ c: KeyedDecodingContainer<K>, _ key: K) throws -> BoundingBox? {
    if let v = try? c.decodeIfPresent([Double].self, forKey: key), v.isEmpty { return nil }
    return try c.decodeIfPresent(BoundingBox.self, forKey: key)
}

/// An annotation (one object instance) of a COCO ground-truth file.
public struct COCOAnnotation: Codable, Hashable, Sendable {
    /// Annotation id (unique in the file). COCO stores it as the match marker, so an id of 0 makes a
    /// matched detection count as unmatched, in pycocotools and here alike.
    public var id: Int
    /// The image it belongs to.
    public var imageID: Int
    /// Its category.
    public var categoryID: Int
    /// Polygons or RLE; required for `segm` evaluation.
    public var segmentation: COCOSegmentation?
    /// `[x, y, w, h]`; required for `bbox` evaluation unless a segmentation gives it.
    public var bbox: BoundingBox?
    /// Area used for the area ranges (COCO takes it from the file; when absent it is computed from
    /// the segmentation, or the box).
    public var area: Double?
    /// A crowd region: never counted as a miss; detections matched to it are ignored.
    public var isCrowd: Bool

    private enum CodingKeys: String, CodingKey {
        case id, imageID = "image_id", categoryID = "category_id", segmentation, bbox, area, isCrowd = "iscrowd"
    }

    /// An annotation.
    public init(id: Int, imageID: Int, categoryID: Int, segmentation: COCOSegmentation? = nil,
                bbox: BoundingBox? = nil, area: Double? = nil, isCrowd: Bool = false) {
        self.id = id
        self.imageID = imageID
        self.categoryID = categoryID
        self.segmentation = segmentation
        self.bbox = bbox
        self.area = area
        self.isCrowd = isCrowd
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decode(Int.self, forKey: .id)
        imageID = try c.decode(Int.self, forKey: .imageID)
        categoryID = try c.decode(Int.self, forKey: .categoryID)
        segmentation = try c.decodeIfPresent(COCOSegmentation.self, forKey: .segmentation)
        bbox = try decodeBox(c, .bbox)
        area = try c.decodeIfPresent(Double.self, forKey: .area)
        isCrowd = try decodeFlag(c, .isCrowd)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode(imageID, forKey: .imageID)
        try c.encode(categoryID, forKey: .categoryID)
        try c.encodeIfPresent(segmentation, forKey: .segmentation)
        try c.encodeIfPresent(bbox, forKey: .bbox)
        try c.encodeIfPresent(area, forKey: .area)
        try c.encode(isCrowd ? 1 : 0, forKey: .isCrowd)
    }
}

/// A COCO ground-truth file: images, annotations and categories (other keys are ignored).
public struct COCOGroundTruth: Codable, Hashable, Sendable {
    /// The images; evaluation covers all of them unless parameters select some.
    public var images: [COCOImage]
    /// The annotations.
    public var annotations: [COCOAnnotation]
    /// The categories; evaluation covers all of them unless parameters select some.
    public var categories: [COCOCategory]

    private enum CodingKeys: String, CodingKey { case images, annotations, categories }

    /// A dataset from its parts.
    public init(images: [COCOImage], annotations: [COCOAnnotation], categories: [COCOCategory]) {
        self.images = images
        self.annotations = annotations
        self.categories = categories
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        images = try c.decodeIfPresent([COCOImage].self, forKey: .images) ?? []
        annotations = try c.decodeIfPresent([COCOAnnotation].self, forKey: .annotations) ?? []
        categories = try c.decodeIfPresent([COCOCategory].self, forKey: .categories) ?? []
    }

    /// Reads a ground-truth file's bytes.
    /// - Throws: `EvaluationError.malformedJSON` naming the offending field.
    public init(jsonData: Data) throws {
        self = try COCOJSON.decode(COCOGroundTruth.self, from: jsonData)
    }

    /// Reads a ground-truth file.
    /// - Throws: `EvaluationError.unreadableFile`, or `malformedJSON` naming the offending field.
    public init(contentsOf url: URL) throws {
        try self.init(jsonData: COCOJSON.read(url))
    }

    /// The file's JSON bytes (keys sorted).
    public func jsonData() throws -> Data { try COCOJSON.encode(self) }
}

/// One detection of a COCO results file.
public struct COCOResult: Codable, Hashable, Sendable {
    /// The image it belongs to (must be in the ground truth).
    public var imageID: Int
    /// Its category.
    public var categoryID: Int
    /// Its confidence.
    public var score: Double
    /// The mask (RLE, as COCO's results format), for `segm` evaluation.
    public var segmentation: COCOSegmentation?
    /// The box `[x, y, w, h]`, for `bbox` evaluation (computed from the mask when absent).
    public var bbox: BoundingBox?

    private enum CodingKeys: String, CodingKey {
        case imageID = "image_id", categoryID = "category_id", score, segmentation, bbox
    }

    /// A detection.
    public init(imageID: Int, categoryID: Int, score: Double, segmentation: COCOSegmentation? = nil, bbox: BoundingBox? = nil) {
        self.imageID = imageID
        self.categoryID = categoryID
        self.score = score
        self.segmentation = segmentation
        self.bbox = bbox
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        imageID = try c.decode(Int.self, forKey: .imageID)
        categoryID = try c.decode(Int.self, forKey: .categoryID)
        score = try c.decode(Double.self, forKey: .score)
        segmentation = try c.decodeIfPresent(COCOSegmentation.self, forKey: .segmentation)
        bbox = try decodeBox(c, .bbox)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(imageID, forKey: .imageID)
        try c.encode(categoryID, forKey: .categoryID)
        try c.encode(score, forKey: .score)
        try c.encodeIfPresent(segmentation, forKey: .segmentation)
        try c.encodeIfPresent(bbox, forKey: .bbox)
    }

    /// Reads a results file's bytes (a JSON array of detections).
    /// - Throws: `EvaluationError.malformedJSON` naming the offending field.
    public static func list(jsonData: Data) throws -> [COCOResult] {
        try COCOJSON.decode([COCOResult].self, from: jsonData)
    }

    /// Reads a results file.
    /// - Throws: `EvaluationError.unreadableFile`, or `malformedJSON` naming the offending field.
    public static func list(contentsOf url: URL) throws -> [COCOResult] {
        try list(jsonData: COCOJSON.read(url))
    }

    /// The JSON bytes of a results list (keys sorted).
    public static func jsonData(_ results: [COCOResult]) throws -> Data { try COCOJSON.encode(results) }
}

/// JSON helpers that turn Foundation's errors into `EvaluationError`s.
enum COCOJSON {
    static func read(_ url: URL) throws -> Data {
        do { return try Data(contentsOf: url) } catch {
            throw EvaluationError.unreadableFile("\(url.path): \(error.localizedDescription)")
        }
    }

    static func decode<T: Decodable>(_ type: T.Type, from data: Data) throws -> T {
        do { return try JSONDecoder().decode(type, from: data) } catch let e as DecodingError {
            throw EvaluationError.malformedJSON(describe(e))
        } catch let e as EvaluationError {
            throw e
        } catch {
            throw EvaluationError.malformedJSON("\(error)")
        }
    }

    static func encode<T: Encodable>(_ value: T) throws -> Data {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return try e.encode(value)
    }

    static func path(_ p: [CodingKey]) -> String {
        p.isEmpty ? "top level" : p.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
    }

    static func describe(_ e: DecodingError) -> String {
        switch e {
        case .keyNotFound(let k, let c): return "missing key \"\(k.stringValue)\" at \(path(c.codingPath))"
        case .typeMismatch(let t, let c): return "expected \(t) at \(path(c.codingPath)): \(c.debugDescription)"
        case .valueNotFound(let t, let c): return "null where \(t) expected at \(path(c.codingPath))"
        case .dataCorrupted(let c): return "\(c.debugDescription) at \(path(c.codingPath))"
        @unknown default: return "\(e)"
        }
    }
}
