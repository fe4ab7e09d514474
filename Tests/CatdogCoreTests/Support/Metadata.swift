import CatdogCheckpoint
import CatdogData
import CatdogEngine
import CatdogRun

/// What `CheckpointMetadata.problem` says (nil: nothing) of the metadata of a `simple` network
/// at 32 px whose configuration and metadata `change` edits: the tests of numbers a hand-made
/// checkpoint may hold out of range.
func metadataProblem(_ change: (inout TrainingConfig, inout CheckpointMetadata) -> Void) throws -> String? {
    let network = try ModelZoo.build("simple", imageSize: 32)
    var config = TrainingConfig()
    config.model = "simple"
    config.imageSize = 32
    var metadata = CheckpointMetadata(model: network, config: config, preprocessing: Preprocessing(imageSize: 32), history: [],
                                      bestValidationLoss: nil, finished: false, ranks: 1)
    change(&config, &metadata)
    metadata.config = config
    return metadata.problem
}

/// The same for a change of the configuration alone.
func metadataProblem(_ change: (inout TrainingConfig) -> Void) throws -> String? {
    try metadataProblem { config, _ in change(&config) }
}
