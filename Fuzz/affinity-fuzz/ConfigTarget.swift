// config: affinityd.conf as the daemon reads it at start and on SIGHUP (`DaemonConfig.apply`,
// compiled in from Sources/affinityd/Config.swift through the DaemonConfig.swift link). Oracle: a
// file that applies leaves every number inside its documented range.
import Foundation

func fuzzConfig(_ bytes: UnsafeRawBufferPointer) {
    let path = fuzzScratch + "/affinityd.conf"
    guard FileManager.default.createFile(atPath: path, contents: Data(bytes)) else { fuzzCheck(false, "cannot write \(path)"); return }
    var config = DaemonConfig()
    do { try config.apply(file: path) } catch { return }
    fuzzCheck((1...64).contains(config.analyseWorkers), "analyse_workers \(config.analyseWorkers)")
    fuzzCheck(config.analyseQueueLimit >= 0 && config.maxImageBytes >= 1024 && config.maxImageDimension >= 16, "limits")
    fuzzCheck(DaemonConfig.priorities[config.logLevel] != nil, "log_level \(config.logLevel)")
}
