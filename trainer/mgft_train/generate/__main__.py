from mgft_train.generate.main import main

raise SystemExit(main())
