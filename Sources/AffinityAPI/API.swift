// AffinityAPI: the names of affinityd's D-Bus API, version 1, in one place for the daemon and its
// clients. data/dbus/*.xml is the source of truth; InterfaceNamesTests checks every name, type
// and option key here against it. No D-Bus code: names only.

/// The names of the D-Bus API (DESIGN.md §3, data/dbus/*.xml).
public enum API {
    /// The bus name the daemon owns.
    public static let busName = "org.lesionaffinity.Affinity1"
    /// The root object: the Manager interface and the ObjectManager of models and jobs.
    public static let root = "/org/lesionaffinity/Affinity1"
    /// The interface names.
    public static let manager = "org.lesionaffinity.Affinity1.Manager"
    public static let model = "org.lesionaffinity.Affinity1.Model"
    public static let job = "org.lesionaffinity.Affinity1.Job"
    /// The prefix of every error name of the API (`…Error.<ErrorName>`).
    public static let errorPrefix = "org.lesionaffinity.Affinity1.Error."
    /// The API version (the Manager's ApiVersion property).
    public static let apiVersion: UInt32 = 1
    /// The object paths of models and jobs start with these.
    public static let modelsPrefix = root + "/models/"
    public static let jobsPrefix = root + "/jobs/"

    /// The object path of a model given as an id or as a path.
    public static func modelPath(_ idOrPath: String) -> String {
        idOrPath.hasPrefix("/") ? idOrPath : modelsPrefix + idOrPath
    }

    /// The object path of job `number`.
    public static func jobPath(_ number: Int) -> String { jobsPrefix + String(number) }

    /// The object path of a job given as a number or as a path.
    public static func jobPath(_ numberOrPath: String) -> String {
        numberOrPath.hasPrefix("/") ? numberOrPath : jobsPrefix + numberOrPath
    }

    /// The last component of an object path (a model id, a job number).
    public static func id(_ path: String) -> String {
        path.split(separator: "/").last.map(String.init) ?? path
    }

    /// The full D-Bus name of an API error.
    public static func errorName(_ error: ErrorName) -> String { errorPrefix + error.rawValue }

    /// The errors of the API: the last component of `org.lesionaffinity.Affinity1.Error.<name>`.
    public enum ErrorName: String, CaseIterable, Sendable {
        case failed = "Failed", cancelled = "Cancelled", notAuthorized = "NotAuthorized"
        case invalidImage = "InvalidImage", unsupportedFormat = "UnsupportedFormat"
        case modelNotFound = "ModelNotFound", modelNotReady = "ModelNotReady", busy = "Busy"
        case queueFull = "QueueFull", datasetInvalid = "DatasetInvalid", pluginFailed = "PluginFailed"
        case invalidArgument = "InvalidArgument"
    }

    /// polkit action ids (systemd/org.lesionaffinity.affinity1.policy).
    public enum Action {
        public static let train = "org.lesionaffinity.affinity1.train"
        public static let finetune = "org.lesionaffinity.affinity1.finetune"
        public static let importModel = "org.lesionaffinity.affinity1.import-model"
        public static let setDefault = "org.lesionaffinity.affinity1.set-default-model"
        public static let cancelOther = "org.lesionaffinity.affinity1.cancel-other-job"
    }
}

/// A property of one of the API's interfaces: its name, D-Bus type and whether it emits
/// PropertiesChanged.
public protocol APIProperty: RawRepresentable, CaseIterable, Sendable where RawValue == String {
    /// The D-Bus type signature.
    var signature: String { get }
    /// Whether changes are announced with PropertiesChanged (false: `const`).
    var emitsChangedSignal: Bool { get }
}

extension APIProperty {
    public var name: String { rawValue }
    public var emitsChangedSignal: Bool { true }
}

/// The Manager's properties (at `API.root`).
public enum ManagerProperty: String, APIProperty {
    case version = "Version", apiVersion = "ApiVersion", state = "State", defaultModel = "DefaultModel"
    case queueLength = "QueueLength", device = "Device"

    public var signature: String {
        switch self {
        case .version, .state, .device: return "s"
        case .apiVersion, .queueLength: return "u"
        case .defaultModel: return "o"
        }
    }

    public var emitsChangedSignal: Bool { self != .version && self != .apiVersion }
}

/// A Model object's properties (at `API.modelPath(id)`); all constant.
public enum ModelProperty: String, APIProperty {
    case name = "Name", affinities = "Affinities", sha256 = "Sha256", createdAt = "CreatedAt", trainedOn = "TrainedOn"
    case metrics = "Metrics", head = "Head", plugins = "Plugins"

    public var signature: String {
        switch self {
        case .name, .sha256, .trainedOn, .head: return "s"
        case .affinities: return "u"
        case .createdAt: return "t"
        case .metrics: return "a{sd}"
        case .plugins: return "as"
        }
    }

    public var emitsChangedSignal: Bool { false }
}

/// A Job object's properties (at `API.jobPath(n)`).
public enum JobProperty: String, APIProperty {
    case operation = "Operation", state = "State", progress = "Progress", epoch = "Epoch", totalEpochs = "TotalEpochs"
    case metrics = "Metrics", startTime = "StartTime", expectedEndTime = "ExpectedEndTime", startedByUID = "StartedByUID"
    case cancelable = "Cancelable", result = "Result", resumed = "Resumed"

    public var signature: String {
        switch self {
        case .operation, .state: return "s"
        case .progress: return "d"
        case .epoch, .totalEpochs, .startedByUID, .resumed: return "u"
        case .metrics: return "a{sd}"
        case .startTime, .expectedEndTime: return "t"
        case .cancelable: return "b"
        case .result: return "a{sv}"
        }
    }

    /// Operation and StartedByUID never change after the job exists.
    public var emitsChangedSignal: Bool { self != .operation && self != .startedByUID }
}

/// A key of a method's trailing `a{sv}` of options, with its D-Bus type.
public protocol APIOption: RawRepresentable, CaseIterable, Sendable where RawValue == String {
    /// The D-Bus type signature of the value.
    var signature: String { get }
}

extension APIOption {
    public var key: String { rawValue }
    /// Every key of this method's options.
    public static var keys: Set<String> { Set(allCases.map(\.rawValue)) }
}

/// The options of Analyse and AnalyseBatch.
public enum AnalyseOption: String, APIOption {
    case model, seed, detections

    public var signature: String {
        switch self {
        case .model: return "o"
        case .seed: return "t"
        case .detections: return "b"
        }
    }
}

/// The options of AnalyseScan.
public enum ScanOption: String, APIOption {
    case model, seed, series, rule
    case windowCenter = "window_center", windowWidth = "window_width"
    case labelVolume = "label_volume"

    public var signature: String {
        switch self {
        case .model: return "o"
        case .seed: return "t"
        case .series, .rule: return "s"
        case .windowCenter, .windowWidth: return "d"
        case .labelVolume: return "b"
        }
    }
}

/// The options of Train and Finetune.
public enum TrainOption: String, APIOption {
    case dataset, split, epochs
    case imageSize = "image_size", iterationsPerEpoch = "iterations_per_epoch"
    case seed, affinities
    case learningRate = "learning_rate", weightDecay = "weight_decay", copyRule = "copy_rule"
    case segmentationStep = "segmentation_step", name, head
    case headConfig = "head_config", headLearningRate = "head_learning_rate"
    case dataFormat = "data_format", segmentationFormat = "segmentation_format", dataOptions = "data_options"
    case checkpointInterval = "checkpoint_interval", checkpointIterations = "checkpoint_iterations"

    public var signature: String {
        switch self {
        case .dataset, .split, .copyRule, .name, .head, .headConfig, .dataFormat, .segmentationFormat, .dataOptions: return "s"
        case .epochs, .imageSize, .iterationsPerEpoch, .affinities, .checkpointInterval, .checkpointIterations: return "u"
        case .seed: return "t"
        case .learningRate, .weightDecay, .headLearningRate: return "d"
        case .segmentationStep: return "b"
        }
    }
}

/// The options of ImportModel.
public enum ImportOption: String, APIOption {
    case name, affinities

    public var signature: String { self == .name ? "s" : "u" }
}
