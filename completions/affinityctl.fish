function __affinityctl_should_offer_completions_for_flags_or_options -a expected_commands
    set -l non_repeating_flags_or_options $argv[2..]
    set -l non_repeating_flags_or_options_absent 0
    set -l positional_index 0
    set -l commands
    __affinityctl_parse_tokens
    test "$commands" = "$expected_commands"; and return $non_repeating_flags_or_options_absent
end

function __affinityctl_should_offer_completions_for_positional -a expected_commands positional_index_comparison expected_positional_index
    set -l non_repeating_flags_or_options
    set -l non_repeating_flags_or_options_absent 0
    set -l positional_index 0
    set -l commands
    __affinityctl_parse_tokens
    test "$commands" = "$expected_commands" -a \( "$positional_index" "$positional_index_comparison" "$expected_positional_index" \)
end

function __affinityctl_parse_tokens -S
    set -l unparsed_tokens (__affinityctl_tokens -pc)
    switch $unparsed_tokens[1]
    case 'affinityctl'
        __affinityctl_parse_subcommand 0 'version' 'h/help'
        switch $unparsed_tokens[1]
        case 'analyse'
            __affinityctl_parse_subcommand -r 1 'bus=' 'json' 'local' 'overlay=' 'mask=' 'model=' 'seed=' 'version' 'h/help'
        case 'analyse-scan'
            __affinityctl_parse_subcommand -r 1 'bus=' 'json' 'local' 'series=' 'mask-out=' 'rule=' 'window-center=' 'window-width=' 'model=' 'seed=' 'version' 'h/help'
        case 'train'
            __affinityctl_parse_subcommand 0 'bus=' 'json' 'local' 'dataset=' 'split=' 'epochs=' 'image-size=' 'iterations-per-epoch=' 'seed=' 'learning-rate=' 'weight-decay=' 'copy-rule=' 'segmentation-step=' 'name=' 'head-learning-rate=' 'data-format=' 'segmentation-format=' 'data-options=' 'checkpoint-interval=' 'checkpoint-iterations=' 'no-wait' 'cancel-on-interrupt' 'affinities=' 'head=' 'head-config=' 'version' 'h/help'
        case 'finetune'
            __affinityctl_parse_subcommand 1 'bus=' 'json' 'local' 'dataset=' 'split=' 'epochs=' 'image-size=' 'iterations-per-epoch=' 'seed=' 'learning-rate=' 'weight-decay=' 'copy-rule=' 'segmentation-step=' 'name=' 'head-learning-rate=' 'data-format=' 'segmentation-format=' 'data-options=' 'checkpoint-interval=' 'checkpoint-iterations=' 'no-wait' 'cancel-on-interrupt' 'version' 'h/help'
        case 'jobs'
            __affinityctl_parse_subcommand 0 'bus=' 'json' 'local' 'version' 'h/help'
        case 'job'
            __affinityctl_parse_subcommand 0 'version' 'h/help'
            switch $unparsed_tokens[1]
            case 'watch'
                __affinityctl_parse_subcommand 1 'bus=' 'json' 'local' 'cancel-on-interrupt' 'reconnect-timeout=' 'version' 'h/help'
            case 'cancel'
                __affinityctl_parse_subcommand 1 'bus=' 'json' 'local' 'wait' 'version' 'h/help'
            case 'resume'
                __affinityctl_parse_subcommand 1 'bus=' 'json' 'local' 'no-wait' 'cancel-on-interrupt' 'version' 'h/help'
            end
        case 'models'
            __affinityctl_parse_subcommand 0 'version' 'h/help'
            switch $unparsed_tokens[1]
            case 'list'
                __affinityctl_parse_subcommand 0 'bus=' 'json' 'local' 'version' 'h/help'
            case 'show'
                __affinityctl_parse_subcommand 1 'bus=' 'json' 'local' 'version' 'h/help'
            case 'import'
                __affinityctl_parse_subcommand 1 'bus=' 'json' 'local' 'name=' 'affinities=' 'set-default' 'version' 'h/help'
            case 'set-default'
                __affinityctl_parse_subcommand 1 'bus=' 'json' 'local' 'version' 'h/help'
            end
        case 'plugins'
            __affinityctl_parse_subcommand 0 'bus=' 'json' 'local' 'version' 'h/help'
        case 'status'
            __affinityctl_parse_subcommand 0 'bus=' 'json' 'local' 'version' 'h/help'
        case 'version'
            __affinityctl_parse_subcommand 0 'bus=' 'json' 'local' 'version' 'h/help'
        case 'help'
            __affinityctl_parse_subcommand -r 1 'version'
        end
    end
end

function __affinityctl_tokens
    if test (string split -m 1 -f 1 -- . "$FISH_VERSION") -gt 3
        commandline --tokens-raw $argv
    else
        commandline -o $argv
    end
end

function __affinityctl_parse_subcommand -S -a positional_count
    argparse -s r -- $argv
    set -l option_specs $argv[2..]
    set -l is_repeating_positional $_flag_r
    set -el _flag_r
    set -a commands $unparsed_tokens[1]
    set positional_index 0
    while true
        set -e unparsed_tokens[1]
        argparse -sn "$commands" $option_specs -- $unparsed_tokens 2> /dev/null
        set unparsed_tokens $argv
        set positional_index (math $positional_index + 1)
        for non_repeating_flag_or_option in $non_repeating_flags_or_options
            if set -ql "_flag_$(string replace -a - _ -- $non_repeating_flag_or_option)"
                set non_repeating_flags_or_options_absent 1
                break
            end
        end
        test (count $unparsed_tokens) -eq 0 -o \( -z "$is_repeating_positional" -a "$positional_index" -gt "$positional_count" \) && break
    end
end

function __affinityctl_complete_directories
    set -l token (commandline -t)
    string match -- '*/' $token
    set -l subdirs $token*/
    printf %s\n $subdirs
end

function __affinityctl_custom_completion
    set -x SAP_SHELL fish
    set -x SAP_SHELL_VERSION $FISH_VERSION
    set -l tokens (__affinityctl_tokens -p)
    if test -z "$(__affinityctl_tokens -t)"
        set -l index (count (__affinityctl_tokens -pc))
        set tokens $tokens[..$index] \'\' $tokens[(math $index + 1)..]
    end
    command $tokens[1] $argv $tokens
end

complete -c 'affinityctl' -f
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl" version' -l 'version' -d 'Show the version.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl" h help' -s 'h' -l 'help' -d 'Show help information.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_positional "affinityctl" -eq 1' -fa 'analyse' -d 'Segments the lesions of chest-CT slices and classifies them.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_positional "affinityctl" -eq 1' -fa 'analyse-scan' -d 'Analyses a whole CT scan (DICOM series or NIfTI volume): a verdict, lesion and lung volumes, and a label volume.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_positional "affinityctl" -eq 1' -fa 'train' -d 'Trains a new model as a daemon job (privileged).'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_positional "affinityctl" -eq 1' -fa 'finetune' -d 'Fine-tunes an existing model as a daemon job (privileged).'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_positional "affinityctl" -eq 1' -fa 'jobs' -d 'Lists the daemon\'s jobs.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_positional "affinityctl" -eq 1' -fa 'job' -d 'Watches, cancels or resumes one job.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_positional "affinityctl" -eq 1' -fa 'models' -d 'Lists, shows, imports and selects models.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_positional "affinityctl" -eq 1' -fa 'plugins' -d 'Lists the daemon\'s loaded plugins.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_positional "affinityctl" -eq 1' -fa 'status' -d 'Shows the daemon\'s state, version, default model, queue and device.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_positional "affinityctl" -eq 1' -fa 'version' -d 'Prints the client\'s version and, when it answers, the daemon\'s.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_positional "affinityctl" -eq 1' -fa 'help' -d 'Show subcommand help information.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl analyse" bus' -l 'bus' -d 'system, session, or a D-Bus address (default: AFFINITY_BUS_ADDRESS, else system).' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl analyse" json' -l 'json' -d 'Print JSON instead of text: one object, or one per line for analyse (per file) and job watch.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl analyse" local' -l 'local' -d 'If no daemon is reachable, run a private dbus-daemon and affinityd for this command.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl analyse" overlay' -l 'overlay' -d 'Write the slice with the lesions tinted and boxed (PNG).' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl analyse" mask' -l 'mask' -d 'Write the daemon\'s lesion label map (8-bit PNG: 0 background, i = lesion i).' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl analyse" model' -l 'model' -d 'The model to use (id or object path; default: the daemon\'s default model).' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl analyse" seed' -l 'seed' -d 'The seed of the RoI-batch padding (default: the daemon\'s, 1).' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl analyse" version' -l 'version' -d 'Show the version.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl analyse" h help' -s 'h' -l 'help' -d 'Show help information.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl analyse-scan" bus' -l 'bus' -d 'system, session, or a D-Bus address (default: AFFINITY_BUS_ADDRESS, else system).' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl analyse-scan" json' -l 'json' -d 'Print JSON instead of text: one object, or one per line for analyse (per file) and job watch.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl analyse-scan" local' -l 'local' -d 'If no daemon is reachable, run a private dbus-daemon and affinityd for this command.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl analyse-scan" series' -l 'series' -d 'The SeriesInstanceUID to analyse when the paths hold several series.' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl analyse-scan" mask-out' -l 'mask-out' -d 'Write the lesion label volume here (.nii.gz).' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl analyse-scan" rule' -l 'rule' -d 'How slice results become the verdict: lesion-weighted (default), mean or majority.' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl analyse-scan" window-center' -l 'window-center' -d 'Centre of the HU window that maps the slices to the model\'s input (default -600).' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl analyse-scan" window-width' -l 'window-width' -d 'Width of that window (default 1500).' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl analyse-scan" model' -l 'model' -d 'The model to use (id or object path; default: the daemon\'s default model).' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl analyse-scan" seed' -l 'seed' -d 'The seed of the RoI-batch padding (default: the daemon\'s, 1).' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl analyse-scan" version' -l 'version' -d 'Show the version.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl analyse-scan" h help' -s 'h' -l 'help' -d 'Show help information.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl train" bus' -l 'bus' -d 'system, session, or a D-Bus address (default: AFFINITY_BUS_ADDRESS, else system).' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl train" json' -l 'json' -d 'Print JSON instead of text: one object, or one per line for analyse (per file) and job watch.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl train" local' -l 'local' -d 'If no daemon is reachable, run a private dbus-daemon and affinityd for this command.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl train" dataset' -l 'dataset' -d 'The data set directory (COVIDx-CT/CNCB layout); a relative path that does not exist here is taken relative to the daemon\'s datasets/.' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl train" split' -l 'split' -d 'train, val or test (default: train).' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl train" epochs' -l 'epochs' -d 'Epochs (default: 1).' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl train" image-size' -l 'image-size' -d 'Training image side, 64-1024 (default: 512).' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl train" iterations-per-epoch' -l 'iterations-per-epoch' -d 'At most this many classification samples per epoch.' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl train" seed' -l 'seed' -d 'The seed of every random choice.' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl train" learning-rate' -l 'learning-rate' -d 'Adam\'s learning rate (default: 1e-5).' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl train" weight-decay' -l 'weight-decay' -d 'Weight decay (default: 1e-3).' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl train" copy-rule' -l 'copy-rule' -d 'previous or best.' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl train" segmentation-step' -l 'segmentation-step' -d 'Run the segmentation step (default: true for train, false for finetune).' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl train" name' -l 'name' -d 'The new model\'s name.' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl train" head-learning-rate' -l 'head-learning-rate' -d 'The learning rate of the classification head\'s own parameters (default: --learning-rate).' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl train" data-format' -l 'data-format' -d 'Read the classification set through this dataset-reader plugin of the daemon (covidx-ct, ictcf, …; see affinityctl plugins) instead of the built-in layout.' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl train" segmentation-format' -l 'segmentation-format' -d 'Read the segmentation set through this dataset-reader plugin (e.g. cncb-seg).' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl train" data-options' -l 'data-options' -d 'JSON options for the reader plugins (default: {"split": <--split>} for covidx-ct, {"split": "train"} for cncb-seg, {} otherwise).' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl train" checkpoint-interval' -l 'checkpoint-interval' -d 'Seconds of training between checkpoints, besides each epoch\'s end; 0: none by time (default: the daemon\'s checkpoint_interval, 900).' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl train" checkpoint-iterations' -l 'checkpoint-iterations' -d 'A checkpoint every this many iterations as well; 0: none (default: the daemon\'s checkpoint_iterations, 0).' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl train" no-wait' -l 'no-wait' -d 'Print the job and return at once instead of waiting for it.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl train" cancel-on-interrupt' -l 'cancel-on-interrupt' -d 'Ctrl-C cancels the job instead of detaching from it.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl train" affinities' -l 'affinities' -d 'C\', the number of affinities (default: 128).' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl train" head' -l 'head' -d 'The classification head: affinity (the paper\'s, default) or the id of a head plugin the daemon has loaded (see: affinityctl plugins).' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl train" head-config' -l 'head-config' -d 'The head plugin\'s JSON configuration.' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl train" version' -l 'version' -d 'Show the version.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl train" h help' -s 'h' -l 'help' -d 'Show help information.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl finetune" bus' -l 'bus' -d 'system, session, or a D-Bus address (default: AFFINITY_BUS_ADDRESS, else system).' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl finetune" json' -l 'json' -d 'Print JSON instead of text: one object, or one per line for analyse (per file) and job watch.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl finetune" local' -l 'local' -d 'If no daemon is reachable, run a private dbus-daemon and affinityd for this command.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl finetune" dataset' -l 'dataset' -d 'The data set directory (COVIDx-CT/CNCB layout); a relative path that does not exist here is taken relative to the daemon\'s datasets/.' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl finetune" split' -l 'split' -d 'train, val or test (default: train).' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl finetune" epochs' -l 'epochs' -d 'Epochs (default: 1).' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl finetune" image-size' -l 'image-size' -d 'Training image side, 64-1024 (default: 512).' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl finetune" iterations-per-epoch' -l 'iterations-per-epoch' -d 'At most this many classification samples per epoch.' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl finetune" seed' -l 'seed' -d 'The seed of every random choice.' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl finetune" learning-rate' -l 'learning-rate' -d 'Adam\'s learning rate (default: 1e-5).' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl finetune" weight-decay' -l 'weight-decay' -d 'Weight decay (default: 1e-3).' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl finetune" copy-rule' -l 'copy-rule' -d 'previous or best.' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl finetune" segmentation-step' -l 'segmentation-step' -d 'Run the segmentation step (default: true for train, false for finetune).' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl finetune" name' -l 'name' -d 'The new model\'s name.' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl finetune" head-learning-rate' -l 'head-learning-rate' -d 'The learning rate of the classification head\'s own parameters (default: --learning-rate).' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl finetune" data-format' -l 'data-format' -d 'Read the classification set through this dataset-reader plugin of the daemon (covidx-ct, ictcf, …; see affinityctl plugins) instead of the built-in layout.' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl finetune" segmentation-format' -l 'segmentation-format' -d 'Read the segmentation set through this dataset-reader plugin (e.g. cncb-seg).' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl finetune" data-options' -l 'data-options' -d 'JSON options for the reader plugins (default: {"split": <--split>} for covidx-ct, {"split": "train"} for cncb-seg, {} otherwise).' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl finetune" checkpoint-interval' -l 'checkpoint-interval' -d 'Seconds of training between checkpoints, besides each epoch\'s end; 0: none by time (default: the daemon\'s checkpoint_interval, 900).' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl finetune" checkpoint-iterations' -l 'checkpoint-iterations' -d 'A checkpoint every this many iterations as well; 0: none (default: the daemon\'s checkpoint_iterations, 0).' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl finetune" no-wait' -l 'no-wait' -d 'Print the job and return at once instead of waiting for it.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl finetune" cancel-on-interrupt' -l 'cancel-on-interrupt' -d 'Ctrl-C cancels the job instead of detaching from it.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl finetune" version' -l 'version' -d 'Show the version.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl finetune" h help' -s 'h' -l 'help' -d 'Show help information.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl jobs" bus' -l 'bus' -d 'system, session, or a D-Bus address (default: AFFINITY_BUS_ADDRESS, else system).' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl jobs" json' -l 'json' -d 'Print JSON instead of text: one object, or one per line for analyse (per file) and job watch.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl jobs" local' -l 'local' -d 'If no daemon is reachable, run a private dbus-daemon and affinityd for this command.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl jobs" version' -l 'version' -d 'Show the version.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl jobs" h help' -s 'h' -l 'help' -d 'Show help information.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl job" version' -l 'version' -d 'Show the version.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl job" h help' -s 'h' -l 'help' -d 'Show help information.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_positional "affinityctl job" -eq 1' -fa 'watch' -d 'Follows a job until it ends.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_positional "affinityctl job" -eq 1' -fa 'cancel' -d 'Asks a job to stop (another user\'s job needs authorization).'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_positional "affinityctl job" -eq 1' -fa 'resume' -d 'Resumes a failed or cancelled training job from its last checkpoint (privileged).'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl job watch" bus' -l 'bus' -d 'system, session, or a D-Bus address (default: AFFINITY_BUS_ADDRESS, else system).' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl job watch" json' -l 'json' -d 'Print JSON instead of text: one object, or one per line for analyse (per file) and job watch.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl job watch" local' -l 'local' -d 'If no daemon is reachable, run a private dbus-daemon and affinityd for this command.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl job watch" cancel-on-interrupt' -l 'cancel-on-interrupt' -d 'Ctrl-C cancels the job instead of detaching from it.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl job watch" reconnect-timeout' -l 'reconnect-timeout' -d 'How long to wait for affinityd to come back when it goes away during the watch; 0: do not wait.' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl job watch" version' -l 'version' -d 'Show the version.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl job watch" h help' -s 'h' -l 'help' -d 'Show help information.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl job cancel" bus' -l 'bus' -d 'system, session, or a D-Bus address (default: AFFINITY_BUS_ADDRESS, else system).' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl job cancel" json' -l 'json' -d 'Print JSON instead of text: one object, or one per line for analyse (per file) and job watch.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl job cancel" local' -l 'local' -d 'If no daemon is reachable, run a private dbus-daemon and affinityd for this command.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl job cancel" wait' -l 'wait' -d 'Wait until the job has stopped.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl job cancel" version' -l 'version' -d 'Show the version.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl job cancel" h help' -s 'h' -l 'help' -d 'Show help information.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl job resume" bus' -l 'bus' -d 'system, session, or a D-Bus address (default: AFFINITY_BUS_ADDRESS, else system).' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl job resume" json' -l 'json' -d 'Print JSON instead of text: one object, or one per line for analyse (per file) and job watch.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl job resume" local' -l 'local' -d 'If no daemon is reachable, run a private dbus-daemon and affinityd for this command.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl job resume" no-wait' -l 'no-wait' -d 'Print the job and return at once instead of waiting for it.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl job resume" cancel-on-interrupt' -l 'cancel-on-interrupt' -d 'Ctrl-C cancels the job instead of detaching from it.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl job resume" version' -l 'version' -d 'Show the version.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl job resume" h help' -s 'h' -l 'help' -d 'Show help information.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl models" version' -l 'version' -d 'Show the version.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl models" h help' -s 'h' -l 'help' -d 'Show help information.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_positional "affinityctl models" -eq 1' -fa 'list' -d 'Lists the daemon\'s models (* marks the default).'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_positional "affinityctl models" -eq 1' -fa 'show' -d 'Shows one model\'s card.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_positional "affinityctl models" -eq 1' -fa 'import' -d 'Imports a safetensors weights file as a new model (privileged).'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_positional "affinityctl models" -eq 1' -fa 'set-default' -d 'Makes a model the one analyse uses by default (privileged).'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl models list" bus' -l 'bus' -d 'system, session, or a D-Bus address (default: AFFINITY_BUS_ADDRESS, else system).' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl models list" json' -l 'json' -d 'Print JSON instead of text: one object, or one per line for analyse (per file) and job watch.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl models list" local' -l 'local' -d 'If no daemon is reachable, run a private dbus-daemon and affinityd for this command.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl models list" version' -l 'version' -d 'Show the version.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl models list" h help' -s 'h' -l 'help' -d 'Show help information.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl models show" bus' -l 'bus' -d 'system, session, or a D-Bus address (default: AFFINITY_BUS_ADDRESS, else system).' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl models show" json' -l 'json' -d 'Print JSON instead of text: one object, or one per line for analyse (per file) and job watch.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl models show" local' -l 'local' -d 'If no daemon is reachable, run a private dbus-daemon and affinityd for this command.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl models show" version' -l 'version' -d 'Show the version.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl models show" h help' -s 'h' -l 'help' -d 'Show help information.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl models import" bus' -l 'bus' -d 'system, session, or a D-Bus address (default: AFFINITY_BUS_ADDRESS, else system).' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl models import" json' -l 'json' -d 'Print JSON instead of text: one object, or one per line for analyse (per file) and job watch.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl models import" local' -l 'local' -d 'If no daemon is reachable, run a private dbus-daemon and affinityd for this command.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl models import" name' -l 'name' -d 'The model\'s name.' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl models import" affinities' -l 'affinities' -d 'C\', when the file does not say.' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl models import" set-default' -l 'set-default' -d 'Make it the default model too.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl models import" version' -l 'version' -d 'Show the version.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl models import" h help' -s 'h' -l 'help' -d 'Show help information.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl models set-default" bus' -l 'bus' -d 'system, session, or a D-Bus address (default: AFFINITY_BUS_ADDRESS, else system).' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl models set-default" json' -l 'json' -d 'Print JSON instead of text: one object, or one per line for analyse (per file) and job watch.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl models set-default" local' -l 'local' -d 'If no daemon is reachable, run a private dbus-daemon and affinityd for this command.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl models set-default" version' -l 'version' -d 'Show the version.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl models set-default" h help' -s 'h' -l 'help' -d 'Show help information.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl plugins" bus' -l 'bus' -d 'system, session, or a D-Bus address (default: AFFINITY_BUS_ADDRESS, else system).' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl plugins" json' -l 'json' -d 'Print JSON instead of text: one object, or one per line for analyse (per file) and job watch.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl plugins" local' -l 'local' -d 'If no daemon is reachable, run a private dbus-daemon and affinityd for this command.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl plugins" version' -l 'version' -d 'Show the version.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl plugins" h help' -s 'h' -l 'help' -d 'Show help information.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl status" bus' -l 'bus' -d 'system, session, or a D-Bus address (default: AFFINITY_BUS_ADDRESS, else system).' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl status" json' -l 'json' -d 'Print JSON instead of text: one object, or one per line for analyse (per file) and job watch.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl status" local' -l 'local' -d 'If no daemon is reachable, run a private dbus-daemon and affinityd for this command.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl status" version' -l 'version' -d 'Show the version.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl status" h help' -s 'h' -l 'help' -d 'Show help information.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl version" bus' -l 'bus' -d 'system, session, or a D-Bus address (default: AFFINITY_BUS_ADDRESS, else system).' -rfka ''
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl version" json' -l 'json' -d 'Print JSON instead of text: one object, or one per line for analyse (per file) and job watch.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl version" local' -l 'local' -d 'If no daemon is reachable, run a private dbus-daemon and affinityd for this command.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl version" version' -l 'version' -d 'Show the version.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl version" h help' -s 'h' -l 'help' -d 'Show help information.'
complete -c 'affinityctl' -n '__affinityctl_should_offer_completions_for_flags_or_options "affinityctl help" version' -l 'version' -d 'Show the version.'
