// AnalyseEngine: reads an image, runs the resident model, returns the result; a bounded queue
// served by worker threads, each using its own model instance.
import Affinity
import Detection
import Foundation
import Imaging
import Tensor

/// Bounds on what Analyse accepts.
public struct ImageLimits: Sendable, Equatable {
    /// Largest image file, in bytes.
    public var maxBytes: Int = 64 << 20
    /// Largest width or height, in pixels (checked from the header before decoding).
    public var maxDimension: Int = 8192
    public init(maxBytes: Int = 64 << 20, maxDimension: Int = 8192) {
        self.maxBytes = maxBytes; self.maxDimension = maxDimension
    }
}

/// Where an image comes from.
public enum ImageSource: Sendable {
    /// A readable descriptor (read from offset 0 with pread for files and memfds, to EOF for pipes);
    /// the caller keeps it open until the analysis completes.
    case fileDescriptor(Int32)
    case bytes([UInt8])
    /// An image already decoded to gray [0, 1] (a scan's slice after its window).
    case gray(GrayImage)
}

/// Options of one analysis.
public struct AnalyseRequest: Sendable {
    /// The model to use (its store id), or nil for the default model.
    public var modelID: String?
    /// Seed of the RoI-batch padding generator (predictImage's `rng`); 1 by default, as
    /// `affinity-lab predict` uses.
    public var seed: UInt64 = 1
    /// Run the segmentation path (lesions and label map) as well as the classification.
    public var withDetections = true
    /// Whether to measure the lung field (`AnalysisResult.lungFieldArea`); a scan analysis segments
    /// it itself (it needs the mask, not only the area) and turns this off.
    public var withLungField = true
    public init(modelID: String? = nil, seed: UInt64 = 1, withDetections: Bool = true) {
        self.modelID = modelID; self.seed = seed; self.withDetections = withDetections
    }
}

/// One lesion in the original image's pixel frame.
public struct Lesion: Sendable, Equatable {
    /// x1, y1, x2, y2 in pixels of the original image.
    public var box: [Double]
    public var score: Double
    /// Pixels of this lesion's label in the label map.
    public var area: Int
}

/// What Analyse returns.
public struct AnalysisResult: Sendable {
    public var modelID: String
    public var modelSHA256: String
    public var prediction: Prediction
    public var lesions: [Lesion]
    /// A gray 8-bit PNG of the original image's size: 0 background, i (1…N) lesion i of `lesions`.
    public var labelMapPNG: [UInt8]
    /// The same label map's pixels, `imageHeight × imageWidth` (0 background, i = lesions[i − 1]).
    public var labelMap: [UInt8] = []
    public var imageWidth: Int, imageHeight: Int
    /// Seconds per stage (decode, preprocess, the model's stages, label_map, queue wait, total).
    public var timings: [String: Double]
    /// The plugins used (`id version`), e.g. the decoder plugin of a JPEG or DICOM slice; empty for
    /// a PNG (read by the built-in decoder).
    public var plugins: [String] = []
    /// Pixels of the lung field (`LungField.area`) at the original image's size; 0 when none is found.
    public var lungFieldArea: Int = 0
}

/// An image that a decoder outside the engine (a decoder plugin) read: gray in [0, 1], and who read it.
public struct ExternallyDecodedImage: Sendable {
    public var image: GrayImage
    /// The decoder's `id version`.
    public var decoder: String
    public init(image: GrayImage, decoder: String) { self.image = image; self.decoder = decoder }
}

/// Decodes an image that is not a PNG: nil when no decoder recognises the bytes; throws when one
/// recognises them but cannot decode them (or the image exceeds `limits`). The engine stays free of
/// the plugin host: the daemon passes one built on its plugin registry.
public typealias ImageDecoderHook = @Sendable (_ bytes: [UInt8], _ limits: ImageLimits) throws -> ExternallyDecodedImage?

/// Reads the whole content of a descriptor, at most `limit` bytes.
/// - Throws: `InvalidImage` when it cannot be read or is larger than `limit`.
public func readImageBytes(fd: Int32, limit: Int) throws -> [UInt8] {
    guard fd >= 0 else { throw ServiceError.invalidImage("The image file descriptor is closed") }
    var out: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 1 << 16)
    var offset: off_t = 0
    var seekable = true
    while true {
        let n: Int = chunk.withUnsafeMutableBytes { buf in
            while true {
                var r: Int
                if seekable {
                    r = pread(fd, buf.baseAddress, buf.count, offset)
                    if r < 0 && errno == ESPIPE { seekable = false; continue }
                } else {
                    r = read(fd, buf.baseAddress, buf.count)
                }
                if r < 0 && errno == EINTR { continue }
                return r
            }
        }
        if n < 0 {
            throw ServiceError.invalidImage("The image file descriptor cannot be read: \(String(cString: strerror(errno)))")
        }
        if n == 0 { break }
        out.append(contentsOf: chunk[0..<n])
        offset += off_t(n)
        if out.count > limit {
            throw ServiceError.invalidImage("The image is larger than the limit of \(limit) bytes")
        }
    }
    if out.isEmpty { throw ServiceError.invalidImage("The image file descriptor holds no data") }
    return out
}

/// Model instances by model id, each checked out by one worker at a time (the model object is not
/// thread-safe). At most `perModel` instances of one model are made; instances of models other
/// than the most recently used two are dropped when returned.
// @unchecked Sendable: the instances and their checkouts are under `lock` (an NSCondition); an instance is used by the one worker that checked it out.
public final class ModelPool: @unchecked Sendable {
    private let store: ModelStore
    private let lock = NSCondition()
    private var idle: [String: [AffinityModel]] = [:]
    private var made: [String: Int] = [:]
    private var recent: [String] = []
    private let perModel: Int

    public init(store: ModelStore, perModel: Int) {
        self.store = store
        self.perModel = max(1, perModel)
    }

    /// Whether an instance of `id` is loaded (idle or in use).
    public func isResident(_ id: String) -> Bool { lock.withLock { (made[id] ?? 0) > 0 } }

    /// An instance of model `id` for the caller's exclusive use (loading one if none is idle and
    /// fewer than `perModel` exist; otherwise waiting for one).
    /// - Throws: `ModelNotFound`, or `Failed` if the weights do not load.
    public func checkOut(_ id: String) throws -> (AffinityModel, ModelCard) {
        guard let card = store.card(id) else { throw ServiceError.modelNotFound("There is no model '\(id)' in the store") }
        lock.lock()
        while true {
            if var list = idle[id], let m = list.popLast() {
                idle[id] = list
                touch(id)
                lock.unlock()
                return (m, card)
            }
            if (made[id] ?? 0) < perModel { break }
            lock.wait()
        }
        made[id, default: 0] += 1
        touch(id)
        lock.unlock()
        do {
            let (m, c) = try store.loadModel(id)
            return (m, c)
        } catch {
            lock.withLock { made[id, default: 1] -= 1 }
            lock.broadcast()
            throw error
        }
    }

    /// Returns an instance taken with `checkOut`.
    public func checkIn(_ id: String, _ model: AffinityModel) {
        lock.withLock {
            if recent.prefix(2).contains(id) {
                idle[id, default: []].append(model)
            } else {
                made[id, default: 1] -= 1
            }
            for old in idle.keys where !recent.prefix(2).contains(old) {
                made[old, default: 0] -= idle[old]?.count ?? 0
                idle[old] = nil
            }
        }
        lock.broadcast()
    }

    private func touch(_ id: String) {
        recent.removeAll { $0 == id }
        recent.insert(id, at: 0)
    }
}

/// The analyse queue: requests wait in a bounded FIFO; `workers` threads take them in order, read
/// and decode the image, and run the model (one instance per worker).
// @unchecked Sendable: the queue, counters and limits are under `lock`; the workers own the requests they dequeue.
public final class AnalyseEngine: @unchecked Sendable {
    public let store: ModelStore
    public let pool: ModelPool
    private let cond = NSCondition()
    /// Waiting analyses: source, request, when queued, completion, and who asked (`submit`'s owner).
    private var pending: [(ImageSource, AnalyseRequest, UInt64, (Result<AnalysisResult, ServiceError>) -> Void, String?)] = []
    private var running = 0
    private var stopped = false
    /// Warm-up requests per worker (index): run by that worker before it takes queued analyses.
    private var warmUps: [[() -> Void]]
    private let workerCount: Int
    private var _limits: ImageLimits
    private var _queueLimit: Int
    private var _queueLimitPerOwner: Int?
    /// Called (on any thread) when the number of waiting or running analyses changes.
    public var onQueueChange: (@Sendable () -> Void)?
    /// Reads images that are not PNGs (decoder plugins); nil: PNG only.
    public let decoder: ImageDecoderHook?

    /// Starts `workers` worker threads.
    /// - Parameter decoder: reads what is not a PNG (JPEG, DICOM through plugins); nil for PNG only.
    public init(store: ModelStore, workers: Int = 1, queueLimit: Int = 16, limits: ImageLimits = ImageLimits(),
                decoder: ImageDecoderHook? = nil) {
        self.store = store
        self.decoder = decoder
        Engine.holdFreedMemory()  // the model runs over and over; released when the queue empties
        pool = ModelPool(store: store, perModel: max(1, workers))
        _limits = limits
        _queueLimit = max(0, queueLimit)
        workerCount = max(1, workers)
        warmUps = Array(repeating: [], count: max(1, workers))
        for i in 0..<max(1, workers) {
            let t = Thread { [weak self] in self?.workLoop(i) }
            t.name = "analyse-\(i)"
            t.stackSize = 8 << 20
            t.start()
        }
    }

    /// The image limits (changeable at any time, e.g. on a configuration reload).
    public var limits: ImageLimits {
        get { cond.withLock { _limits } }
        set { cond.withLock { _limits = newValue } }
    }

    /// The most analyses that may wait (beyond those running); past it `submit` throws `QueueFull`.
    public var queueLimit: Int {
        get { cond.withLock { _queueLimit } }
        set { cond.withLock { _queueLimit = max(0, newValue) } }
    }

    /// The most analyses one owner (one caller: `submit`'s `owner`) may have waiting, so that one
    /// caller cannot fill the queue for everyone; nil (the default): half of `queueLimit`, at least 1.
    public var queueLimitPerOwner: Int? {
        get { cond.withLock { _queueLimitPerOwner } }
        set { cond.withLock { _queueLimitPerOwner = newValue.map { max(1, $0) } } }
    }

    /// Analyses waiting for a worker.
    public var queueLength: Int { cond.withLock { pending.count } }
    /// Analyses waiting or running.
    public var activeCount: Int { cond.withLock { pending.count + running } }

    /// Queues an analysis; `completion` runs on a worker thread.
    /// - Parameters:
    ///   - bypassLimit: for the service's own jobs (batch analysis), which wait instead.
    ///   - owner: who asks (e.g. the caller's user), for `queueLimitPerOwner`; nil: not counted.
    /// - Throws: `QueueFull` when `queueLimit` analyses already wait, or `owner` already has its
    ///   share of them waiting; `Failed` after `stop()`.
    public func submit(_ source: ImageSource, _ request: AnalyseRequest, bypassLimit: Bool = false, owner: String? = nil,
                       completion: @escaping (Result<AnalysisResult, ServiceError>) -> Void) throws {
        try cond.withLock {
            guard !stopped else { throw ServiceError.failed("The service is stopping") }
            if !bypassLimit && pending.count >= _queueLimit {
                throw ServiceError(.queueFull, "\(pending.count) analyses are already waiting, the limit is \(_queueLimit); try again later")
            }
            if !bypassLimit, let owner {
                let share = _queueLimitPerOwner ?? max(1, _queueLimit / 2)
                let mine = pending.reduce(0) { $0 + ($1.4 == owner ? 1 : 0) }
                if mine >= share {
                    throw ServiceError(.queueFull, "\(mine) of your analyses are already waiting; one caller may have at most \(share) waiting "
                                       + "(of \(_queueLimit) for everyone), so that no caller fills the queue; try again when one has finished")
                }
            }
            pending.append((source, request, DispatchTime.now().uptimeNanoseconds, completion, owner))
            cond.signal()
        }
        onQueueChange?()
    }

    /// Runs one analysis and waits for it (for jobs; never from the bus thread).
    public func analyseAndWait(_ source: ImageSource, _ request: AnalyseRequest) throws -> AnalysisResult {
        let done = DispatchSemaphore(value: 0)
        var result: Result<AnalysisResult, ServiceError>!
        try submit(source, request, bypassLimit: true) { r in result = r; done.signal() }
        done.wait()
        return try result.get()
    }

    /// Loads the default model (or `id`) into the pool and warms it up, so that the first analyses
    /// neither wait for the weights nor grow the process: every worker thread checks out its own
    /// instance (one per worker, as many as the pool keeps) and analyses a blank PNG and a phantom
    /// slice of the model's input size through the whole path (decode, preprocess, model with detections, label map,
    /// lung field), which allocates the instance's workspaces, the BLAS buffers and the thread's
    /// allocator arena at their steady-state sizes. Waits until every worker is done.
    /// - Throws: `ModelNotReady` when there is no default model; `ModelNotFound`, `Failed` (also
    ///   when the model fails on the blank image).
    public func preload(_ id: String? = nil) throws {
        guard let id = id ?? store.defaultModelID else {
            throw ServiceError(.modelNotReady, "No model is installed; import one with ImportModel or train one")
        }
        // Load once first, so that a model whose weights do not load fails here, on this thread.
        let (m, _) = try pool.checkOut(id)
        pool.checkIn(id, m)
        // A blank slice, then a phantom chest slice with lesions: the blank one sizes the backbone
        // and the classification path, the phantom the detection and mask paths (a blank slice
        // gives few detections, and a first real slice would grow the process again).
        let warmUpImages = [try Self.blankImagePNG(), try Self.phantomImagePNG()]
        let group = DispatchGroup()
        let lock = NSLock()
        var failure: Error?
        var checkedOut = 0
        let allOut = NSCondition()
        let n = workerCount
        try cond.withLock {
            guard !stopped else { throw ServiceError.failed("The service is stopping") }
            for w in 0..<n {
                group.enter()
                warmUps[w].append { [self] in
                    defer { group.leave() }
                    do {
                        let (model, _) = try pool.checkOut(id)
                        // Hold the instance until every worker has one (or a minute passes, when a
                        // worker is busy), so that each worker warms a distinct instance.
                        allOut.withLock { checkedOut += 1; allOut.broadcast() }
                        allOut.lock()
                        let deadline = Date().addingTimeInterval(60)
                        while checkedOut < n && allOut.wait(until: deadline) {}
                        allOut.unlock()
                        defer { pool.checkIn(id, model) }
                        for image in warmUpImages {
                            _ = try analyse(.bytes(image), AnalyseRequest(modelID: id), limits: ImageLimits(), instance: (model, nil))
                        }
                    } catch {
                        allOut.withLock { checkedOut += 1; allOut.broadcast() }
                        lock.withLock { failure = failure ?? error }
                    }
                }
            }
            cond.broadcast()
        }
        group.wait()
        Engine.releaseFreedMemory()  // idle again: what the warm-up freed goes back
        if let failure {
            let e = ServiceError(failure)
            throw ServiceError(e.kind, "The model was loaded but its warm-up analysis failed: \(e.message)")
        }
    }

    /// A phantom COVID-19 chest slice of the model's input size (512×512), fixed seed.
    static func phantomImagePNG() throws -> [UInt8] {
        try PNG.encode(PhantomGenerator(seed: 1, size: Preprocessing.modelSide).slice(index: 0, class: .covid).pixelImage)
    }

    /// A black gray PNG of the model's input size (512×512).
    static func blankImagePNG() throws -> [UInt8] {
        let side = Preprocessing.modelSide
        return try PNG.encode(try PixelImage(bytes: [UInt8](repeating: 0, count: side * side), width: side, height: side, format: .gray))
    }

    /// Refuses new work; waiting analyses fail with `Cancelled`; running ones finish.
    public func stop() {
        let dropped: [(Result<AnalysisResult, ServiceError>) -> Void] = cond.withLock {
            stopped = true
            let d = pending.map { $0.3 }
            pending.removeAll()
            cond.broadcast()
            return d
        }
        for c in dropped { c(.failure(ServiceError(.cancelled, "The service is stopping"))) }
        onQueueChange?()
    }

    private func workLoop(_ index: Int) {
        while true {
            cond.lock()
            while pending.isEmpty && warmUps[index].isEmpty && !stopped { cond.wait() }
            if !warmUps[index].isEmpty {
                let warmUp = warmUps[index].removeFirst()
                cond.unlock()
                warmUp()
                continue
            }
            if stopped && pending.isEmpty { cond.unlock(); return }
            let (source, request, queued, completion, _) = pending.removeFirst()
            running += 1
            let limits = _limits
            cond.unlock()
            onQueueChange?()
            let wait = Double(DispatchTime.now().uptimeNanoseconds - queued) / 1e9
            let result: Result<AnalysisResult, ServiceError>
            do {
                var r = try analyse(source, request, limits: limits)
                r.timings["queue_wait"] = wait
                result = .success(r)
            } catch {
                result = .failure(ServiceError(error))
            }
            let idle = cond.withLock { running -= 1; return running == 0 && pending.isEmpty }
            completion(result)
            // The process holds freed tensors for the next analysis while busy (Engine.holdFreedMemory);
            // idle, it gives them back.
            if idle { Engine.releaseFreedMemory() }
            onQueueChange?()
        }
    }

    /// Reads, decodes, preprocesses and predicts (on the calling thread).
    /// - Parameter instance: a model instance of `request.modelID` the caller has checked out (and
    ///   checks in); nil: one is checked out of the pool for the prediction.
    func analyse(_ source: ImageSource, _ request: AnalyseRequest, limits: ImageLimits,
                 instance: (AffinityModel, ModelCard?)? = nil) throws -> AnalysisResult {
        let t0 = DispatchTime.now().uptimeNanoseconds
        func since(_ t: UInt64) -> Double { Double(DispatchTime.now().uptimeNanoseconds - t) / 1e9 }
        guard let id = request.modelID ?? store.defaultModelID else {
            throw ServiceError(.modelNotReady, "No model is installed; import one with ImportModel or train one")
        }
        guard store.card(id) != nil else { throw ServiceError.modelNotFound("There is no model '\(id)' in the store") }
        let bytes: [UInt8]
        var given: GrayImage?
        switch source {
        case .gray(let g):
            guard g.width <= limits.maxDimension, g.height <= limits.maxDimension else {
                throw ServiceError.invalidImage("The image is \(g.width)×\(g.height) pixels; the limit is \(limits.maxDimension) per side")
            }
            given = g
            bytes = []
        case .fileDescriptor(let fd): bytes = try readImageBytes(fd: fd, limit: limits.maxBytes)
        case .bytes(let b):
            guard b.count <= limits.maxBytes else { throw ServiceError.invalidImage("The image is larger than the limit of \(limits.maxBytes) bytes") }
            bytes = b
        }
        // The model input, and the image's size (PNG: the built-in reader; else a decoder plugin).
        var png: PixelImage?, gray: GrayImage?
        let width: Int, height: Int
        var plugins: [String] = []
        if let given {
            gray = given
            width = given.width; height = given.height
        } else if decoder == nil || (bytes.count >= 8 && Array(bytes[0..<8]) == PNG.signature) {
            let image: PixelImage
            do {
                image = try PNG.decode(bytes, options: PNGReadOptions(maxDimension: limits.maxDimension, maxFileBytes: limits.maxBytes))
            } catch let e as ImageError {
                switch e {
                case .notPNG: throw ServiceError(.unsupportedFormat, "The image is not a PNG image (it does not start with the PNG signature); only PNG is supported")
                case .unsupported: throw ServiceError(.unsupportedFormat, e.description)
                default: throw ServiceError.invalidImage(e.description)
                }
            }
            png = image
            width = image.width; height = image.height
        } else {
            let external: ExternallyDecodedImage?
            do { external = try decoder!(bytes, limits) } catch let e as ServiceError { throw e } catch {
                throw ServiceError.invalidImage("The image cannot be decoded: \(error)")
            }
            guard let external else {
                throw ServiceError(.unsupportedFormat, "The image is not a PNG image and no loaded decoder plugin recognises it")
            }
            guard external.image.width <= limits.maxDimension, external.image.height <= limits.maxDimension else {
                throw ServiceError.invalidImage("The image is \(external.image.width)×\(external.image.height) pixels; the limit is \(limits.maxDimension) per side")
            }
            gray = external.image
            width = external.image.width; height = external.image.height
            plugins = [external.decoder]
        }
        let decoded = since(t0)
        let t1 = DispatchTime.now().uptimeNanoseconds
        let modelInput = png.map { Preprocessing.modelInput($0) } ?? Preprocessing.modelInput(gray!)
        let input = try Tensor(shape: [1, 3, Preprocessing.modelSide, Preprocessing.modelSide], values: modelInput)
        let preprocess = since(t1)
        let tLung = DispatchTime.now().uptimeNanoseconds
        let lungFieldArea = request.withLungField ? LungField.area(gray ?? png!.grayImage()) : 0
        let lungField = since(tLung)
        let model: AffinityModel, card: ModelCard
        if let instance {
            model = instance.0
            guard let c = instance.1 ?? store.card(id) else { throw ServiceError.modelNotFound("There is no model '\(id)' in the store") }
            card = c
        } else {
            (model, card) = try pool.checkOut(id)
        }
        defer { if instance == nil { pool.checkIn(id, model) } }
        // The model's plugins (a plugin head) are used by this analysis too.
        plugins += card.plugins.map { "\($0.id) \($0.version)" }.filter { !plugins.contains($0) }
        var rng = SeededGenerator(seed: request.seed)
        let prediction: Prediction
        do {
            prediction = try model.predictImage(input, withDetections: request.withDetections, rng: &rng)
        } catch {
            throw ServiceError.failed("The model failed on this image: \(error)")
        }
        let t2 = DispatchTime.now().uptimeNanoseconds
        let (labelMapPNG, labelPixels, lesions) = try labelMap(prediction, width: width, height: height)
        var timings = prediction.timings
        timings["decode"] = decoded
        timings["preprocess"] = preprocess
        timings["lung_field"] = lungField
        timings["label_map"] = since(t2)
        timings["analyse_total"] = since(t0)
        return AnalysisResult(modelID: id, modelSHA256: card.sha256, prediction: prediction, lesions: lesions, labelMapPNG: labelMapPNG,
                              labelMap: labelPixels, imageWidth: width, imageHeight: height, timings: timings, plugins: plugins,
                              lungFieldArea: lungFieldArea)
    }

    /// The label map of the detections in the original image's frame: each detection's 28×28 mask
    /// pasted into the 512×512 model frame (> 0.5), in score order (a pixel keeps the first lesion
    /// that claims it), then sampled nearest to width × height; boxes scaled to the same frame.
    func labelMap(_ p: Prediction, width: Int, height: Int) throws -> ([UInt8], [UInt8], [Lesion]) {
        let side = Preprocessing.modelSide
        var model = [UInt8](repeating: 0, count: side * side)
        let n = min(p.detections.count, 255)
        for i in 0..<n {
            let d = p.detections[i]
            let probs = d.mask28.withUnsafeBufferPointer {
                pasteMask($0.baseAddress!, size: 28, box: d.box, imageHeight: side, imageWidth: side)
            }
            let label = UInt8(i + 1)
            for j in 0..<(side * side) where probs[j] > 0.5 && model[j] == 0 { model[j] = label }
        }
        var out = [UInt8](repeating: 0, count: width * height)
        var areas = [Int](repeating: 0, count: n + 1)
        for y in 0..<height {
            let sy = min(side - 1, y * side / height)
            for x in 0..<width {
                let sx = min(side - 1, x * side / width)
                let v = model[sy * side + sx]
                out[y * width + x] = v
                areas[Int(v)] += 1
            }
        }
        let fx = Double(width) / Double(side), fy = Double(height) / Double(side)
        let lesions = (0..<n).map { i -> Lesion in
            let b = p.detections[i].box
            return Lesion(box: [Double(b.x1) * fx, Double(b.y1) * fy, Double(b.x2) * fx, Double(b.y2) * fy],
                          score: Double(p.detections[i].score), area: areas[i + 1])
        }
        let png = try PNG.encode(try PixelImage(bytes: out, width: width, height: height, format: .gray))
        return (png, out, lesions)
    }
}
