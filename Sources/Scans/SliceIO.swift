// What the scan analysis reads slices through and writes its label volume to: implemented by the
// file readers (DICOM through a decoder plugin, NIfTI through nifticlib) and the label writers.

/// Reads the Modality-LUT values (HU for CT) of one slice: `rows × columns`, row-major, in the
/// stored layout.
public protocol ScanSliceReader: Sendable {
    func values(of slice: SliceHeader) throws -> [Float]
}

/// Receives the label volume slice by slice (stored layout, the series' slice order), so that it
/// is never whole in memory; `finish` completes the file.
public protocol LabelVolumeSink: AnyObject {
    func begin(series: AssembledSeries, columns: Int, rows: Int) throws
    func append(slice labels: [UInt8]) throws
    func finish() throws
}
