"""One builder module per corpus: PTB-XL, CPSC2018, Chapman-Shaoxing/Ningbo (CSN), the PhysioNet/CinC
Challenges 2020/2021, MIMIC-IV-ECG and the synthetic corpus. Each documents the known data defects it
handles. Use :func:`datasets_scripts.load_ecg_dataset` or :func:`datasets_scripts.get_builder_class`.
"""
