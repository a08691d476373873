// The bundled demo model (models/phantom-demo/ in the repository, share/lesionaffinity/models when
// installed): where it is, and what its card says.
import Foundation

/// The models shipped with the project, used when no other model is installed.
public enum BundledModel {
    /// The bundled default model's directory name.
    public static let defaultName = "phantom-demo"
    /// The environment variable that names the bundled models directory (overrides the search).
    public static let environmentVariable = "AFFINITY_BUNDLED_MODELS"
    /// What the daemon and affinity-lab say when they fall back to the demo model.
    public static let disclaimer = "trained on synthetic phantoms, for demonstration, not for diagnosis"

    /// The directory holding the bundled models (`<dir>/phantom-demo/weights.safetensors`), or nil:
    /// 1. `$AFFINITY_BUNDLED_MODELS` when set (even if it holds no model: an empty directory turns
    ///    the fallback off);
    /// 2. `<executable's dir>/../share/lesionaffinity/models` (the installed layout) when it holds
    ///    the default model;
    /// 3. a `models` directory holding the default model in the executable's directory or one of
    ///    its parents (a build tree: `.build/release/affinity-lab` → the repository root).
    public static func directory(environment: [String: String] = ProcessInfo.processInfo.environment,
                                 executable: URL? = nil) -> URL? {
        if let configured = environment[environmentVariable], !configured.isEmpty {
            return URL(fileURLWithPath: configured)
        }
        let exe = (executable ?? URL(fileURLWithPath: "/proc/self/exe")).resolvingSymlinksInPath()
        let binDir = exe.deletingLastPathComponent()
        let installed = binDir.deletingLastPathComponent().appendingPathComponent("share/lesionaffinity/models")
        if holdsDefault(installed) { return installed.standardizedFileURL }
        var dir = binDir
        for _ in 0..<8 {
            let candidate = dir.appendingPathComponent("models")
            if holdsDefault(candidate) { return candidate.standardizedFileURL }
            let parent = dir.deletingLastPathComponent()
            if parent.path == dir.path { break }
            dir = parent
        }
        return nil
    }

    /// The default bundled model (`<directory>/phantom-demo`) when its weights exist, else nil.
    public static func defaultModel(environment: [String: String] = ProcessInfo.processInfo.environment,
                                    executable: URL? = nil) -> URL? {
        guard let dir = directory(environment: environment, executable: executable) else { return nil }
        let model = dir.appendingPathComponent(defaultName)
        return holdsDefault(dir) ? model : nil
    }

    /// The weights file of a bundled model directory.
    public static func weights(_ modelDirectory: URL) -> URL { modelDirectory.appendingPathComponent("weights.safetensors") }
    /// The card (JSON, `ModelCard`'s fields) of a bundled model directory.
    public static func card(_ modelDirectory: URL) -> URL { modelDirectory.appendingPathComponent("card.json") }

    static func holdsDefault(_ dir: URL) -> Bool {
        FileManager.default.isReadableFile(atPath: weights(dir.appendingPathComponent(defaultName)).path)
    }
}
